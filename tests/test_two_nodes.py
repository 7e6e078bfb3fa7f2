"""Two Ray nodes on this machine with token authentication, and a real S3-compatible server
(moto, loopback) as the only storage: `ray job submit` of the whole pipeline puts one VAE
worker, one encoding actor, one training worker and one generation actor on each node (one
CPU each), and every output lands in the bucket; then a fresh process with an empty cache
generates from what the bucket holds.

Each node is a `ray start` with its own ports in a process group of its own, stopped by that
group (never Ray's machine-wide stop command, which would stop every Ray cluster on the
machine). About 1.5 minutes on 2 cores, with the cluster's start and stop.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from helpers import RAY, TINY, node_ports, start_head, stop_process_group
from test_pipeline import SMALL_TOKENIZER

from arplatform.outputs import storage

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def two_nodes(s3_server):
    """A head and a second node, one CPU each, token auth on, the bucket's AWS_* variables and
    an MLflow store both nodes reach in every Ray process's environment."""
    tmp = tempfile.mkdtemp(prefix="tn", dir="/tmp")  # short: Ray's socket paths live under it
    env = dict(os.environ, **s3_server["env"], MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
               ARPLATFORM_CACHE_DIR=f"{tmp}/cache")
    groups = []
    try:
        group, join, address = start_head(tmp, 1, env)
        groups.append(group)
        env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"} | join
        second = subprocess.Popen([RAY, "start", f"--address={join['RAY_ADDRESS']}", "--node-ip-address=127.0.0.1",
                                   "--num-cpus=1", f"--temp-dir={tmp}/n2", "--disable-usage-stats", *node_ports()],
                                  env=env | {"RAY_API_SERVER_ADDRESS": address}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        groups.append(second.pid)
        assert second.wait(timeout=120) == 0, "ray start --address failed"
        env.pop("RAY_ADDRESS")  # `ray job` talks to the jobs API at `address`
        yield env, address, tmp
    finally:
        stop_process_group(*groups)
        shutil.rmtree(tmp, ignore_errors=True)


def test_pipeline_job_on_two_nodes_keeps_everything_in_the_bucket(two_nodes, s3_root, tmp_path):
    env, address, tmp = two_nodes
    sid = f"arplatform-two-nodes-{int(time.time())}"
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--submission-id", sid, "--working-dir", REPO, "--",
         sys.executable, "-m", "arplatform", "pipeline", "--config-name", "pipeline/mnist_sample",
         f"output_root={s3_root}", "num_samples=20", "actors=2", "cpus_per_actor=1",
         *[f"tokenizer.{o}" for o in SMALL_TOKENIZER], "tokenizer.engine=ray", "tokenizer.actors=2",
         "tokenizer.cpus_per_actor=1",
         *[f"train.{o}" for o in TINY], "train.optim.epochs=2",
         "train.trainer.placement_strategy=STRICT_SPREAD", "train.trainer.cpus_per_worker=0.5"],
        env=env, capture_output=True, text=True, timeout=900)
    status = subprocess.run([RAY, "job", "status", "--address", address, sid], env=env, capture_output=True,
                            text=True, timeout=60)
    out = submit.stdout + submit.stderr
    assert "succeeded" in status.stdout.lower(), out[-5000:]
    assert f"report: {s3_root}/reports/mnist_sample/report.md" in submit.stdout

    # the tokenizer on Ray across both nodes: its code shards published in the bucket, its staging gone
    assert "vae: Ray Train, 2 worker(s)" in submit.stdout and "encode: 2 actor(s)" in submit.stdout
    bucket = storage.Location(s3_root)
    shards = bucket.listdir("codebook/mnist_sample/shards")
    assert shards and all(n.startswith(("codes-", "labels-")) for n in shards), shards
    assert bucket.listdir(".staging") == []

    # training: a worker on each node; Ray's checkpoints, the run folder and the seed's path in the bucket
    (run_name,) = bucket.listdir("transformer/mnist_sample/runs")
    summary = bucket.read_json_object(f"transformer/mnist_sample/runs/{run_name}/summary.json")
    assert len(set(summary["worker_nodes"])) == 2, summary["worker_nodes"]
    from mlflow.tracking import MlflowClient  # rank 0 logged through MLFLOW_TRACKING_URI, from its node

    history = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(summary["mlflow_run_id"], "val/loss")
    assert len(history) == 2
    ray_run = bucket / f"ray/{run_name}"
    checkpoints = [n for n in ray_run.listdir() if n.startswith("checkpoint_") and not n.endswith(".json")]
    assert checkpoints and all(ray_run.isfile(f"{c}/best.pt") for c in checkpoints)
    assert bucket.isfile("transformer/mnist_sample/checkpoints/best.pt")
    assert bucket.isfile("codebook/mnist_sample/codebook.pt")

    # generation: an actor on each node, every sample in the bucket
    samples = bucket / f"samples/mnist_sample/{run_name}"
    manifest = samples.read_json_object("manifest.json")
    assert len(set(manifest["nodes"])) == 2 and manifest["num_written"] == 20, manifest["nodes"]
    assert len(samples.listdir("images")) == 20
    quality = samples.read_json_object("quality.json")
    assert quality["num_samples"] == 20
    assert bucket.isfile("reports/mnist_sample/report.html")

    # a fresh process on an empty cache: checkpoint, codebook and VAE come from the bucket
    fresh_env = dict(env, ARPLATFORM_CACHE_DIR=str(tmp_path / "empty-cache"))
    fresh_env.pop("RAY_AUTH_TOKEN_PATH")
    gen = subprocess.run(
        [sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt",
         bucket.file("transformer/mnist_sample/checkpoints/best.pt"), "--num_samples", "4",
         "--engine", "local", "--out", bucket.file("samples/fresh")],
        env=fresh_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-3000:]
    fresh = bucket.read_json_object("samples/fresh/manifest.json")
    # the tokenizer version the run trained on, kept in the bucket whatever a later tokenize publishes
    version = storage.Location(fresh["codebook_pt"]).parent.parent
    assert version.path.startswith(bucket.file("tokenizers/mnist_sample") + "/")
    assert fresh["codebook_pt"] == version.file("codebook/codebook.pt")
    assert fresh["vae_ckpt"] == version.file("vae/checkpoints/best.pt")
    assert fresh["num_written"] == 4
