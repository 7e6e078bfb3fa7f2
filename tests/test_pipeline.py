"""The whole chain in one command, at small sizes: tokenize → train (Ray Train) → generate
(Ray Data) → evaluate → report; run again, every stage is reused; force redoes one."""

import json
import os
import subprocess
import sys

import pytest
from helpers import TINY, job_env
from test_generate import generate, images

pytestmark = pytest.mark.slow

SMALL_TOKENIZER = ["data.limit=600", "vae.epochs=2", "vae.batch_size=32", "vae.channels=16", "vae.warmup_steps=5",
                   "codebook.num_codes=16"]


def pipeline(root, *extra, cluster=None, popen=False):
    env = job_env(cluster)
    cmd = [sys.executable, "-m", "arplatform", "pipeline", "--config-name", "pipeline/mnist_sample",
           f"output_root={root}", "num_samples=20", *[f"tokenizer.{o}" for o in SMALL_TOKENIZER],
           *[f"train.{o}" for o in TINY], "train.optim.epochs=2", "train.model.embed_dim=32",
           "train.tracking.register=true", *extra]
    if popen:  # its own session: a kill takes the driver and the Ray cluster it started
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def check_mlflow_records(root, logged: dict) -> None:
    """What MLflow's UI shows of the training run, read through MLflow's own API: a model-training
    experiment; a logged model of the run with the run's last validation metrics linked to it and
    a registered version; the training codes as a dataset input with the tokenizer's version;
    the source commit; no absolute local path in its tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    model = client.get_logged_model(logged["model_id"])
    run = client.get_run(model.source_run_id)
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert [m.model_id for m in client.search_logged_models([run.info.experiment_id])] == [model.model_id]
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    linked = {m.key: m.value for m in model.metrics}
    assert linked["val/loss"] == client.get_metric_history(run.info.run_id, "val/loss")[-1].value
    from arplatform.cli import compose

    sample = compose("transformer/mnist_sample", [])["sample"]  # the model's parameters: what generate draws with
    assert model.params["temperature"] == str(sample["temperature"]) and model.status == "READY"
    assert model.params["cfg_schedule"] == sample["cfg_schedule"] == "linear"
    version = client.get_model_version("arplatform-mnist_sample", "1")
    assert version.source == f"models:/{model.model_id}" and version.run_id == run.info.run_id
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name.startswith("codes of tokenizer mnist_sample/") and len(data.dataset.digest) == 32
    assert [t.value for t in data.tags] == ["training"]
    assert json.loads(data.dataset.source)["uri"].startswith("tokenizers/mnist_sample/")  # relative to the root
    tags = run.data.tags
    assert tags["tokenizer_version"] == data.dataset.name.split()[-1]
    assert tags["run_dir"].startswith("transformer/mnist_sample/runs/") and tags["mlflow.source.name"]
    assert not [k for k, v in tags.items() if str(root) in v], tags
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    assert tags.get("mlflow.source.git.commit") == (commit or None)


def test_pipeline_runs_the_chain_then_reuses_it(tmp_path, ray_cluster):
    first = pipeline(tmp_path, cluster=ray_cluster)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-4000:]
    for stage in ("tokenize", "train", "generate", "evaluate"):
        assert f"[{stage}] running" in first.stdout, stage
    report = tmp_path / "reports" / "mnist_sample"
    assert {"report.md", "report.html", "grid.png", "curve.png", "nearest.png", "reconstructions.png",
            "history.json"} <= set(os.listdir(report))
    text = (report / "report.md").read_text()
    assert "class accuracy" in text and "Fréchet" in text and "MLflow run" in text and "curve.png" in text
    assert "first run of this config" in text and " parameters" in text and "composed config" in text
    page = (report / "report.html").read_text()
    assert page.count("<img src='data:image/png;base64,") == 4 and "src='grid.png'" not in page  # one file
    assert f"report: {report / 'report.md'}" in first.stdout
    # the training run's model in MLflow (the embedded store): registered, and generate takes its URI
    (summary,) = (tmp_path / "transformer" / "mnist_sample" / "runs").glob("*/summary.json")
    logged = json.loads(summary.read_text())["mlflow_model"]
    assert logged["registered_uri"] == "models:/arplatform-mnist_sample/1" and "MLflow registered" in first.stdout
    best = tmp_path / "transformer" / "mnist_sample" / "checkpoints" / "best.pt"
    assert generate("--transformer_ckpt", best, "--num_samples", 4, "--out", tmp_path / "from_path")[0] == 0
    check_mlflow_records(tmp_path, logged)
    # the end-of-training samples are generate's own: the command redraws them image for image
    run_dir = summary.parent
    assert (run_dir / "samples_grid.png").is_file()
    code, _, err = generate(f"transformer_ckpt={run_dir / 'checkpoints' / 'best.pt'}", "num_samples=8", "seed=0",
                            "format=npz", f"out={tmp_path / 'regrid'}")
    assert code == 0, err
    assert (images(tmp_path / "regrid")[0] == images(run_dir / "samples")[0]).all()
    for uri, name in ((logged["registered_uri"], "registered"), (logged["model_uri"], "logged"),
                      (logged["run_uri"], "run")):
        code, _, err = generate(f"transformer_ckpt={uri}", f"output_root={tmp_path}", "num_samples=4",
                                f"out={tmp_path / name}")
        assert code == 0, err
        assert (images(tmp_path / name)[0] == images(tmp_path / "from_path")[0]).all()
    # samples drawn from an MLflow model are evaluated against the dataset behind it (N20)
    from helpers import run_main

    from arplatform.cli import evaluate as evaluate_cli

    code, err = run_main(evaluate_cli.main, ["samples", f"samples_dir={tmp_path / 'run'}", f"output_root={tmp_path}"])
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "quality.json").read_text())["heldout_bits_per_code"] > 0

    again = pipeline(tmp_path, cluster=ray_cluster)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("tokenize", "train", "generate", "evaluate"):
        assert f"[{stage}] reused" in again.stdout, (stage, again.stdout[-3000:])

    # a standalone generate writing the pipeline's samples folder: force does not cut it short
    from filelock import FileLock

    (folder,) = (tmp_path / "samples" / "mnist_sample").iterdir()
    before = (folder / "samples.npz").read_bytes()
    with FileLock(str(folder / ".lock"), timeout=0):
        busy = pipeline(tmp_path, "force=[generate]", cluster=ray_cluster)
    assert busy.returncode == 2 and "another generate run is writing" in busy.stderr, busy.stderr[-3000:]
    assert (folder / "samples.npz").read_bytes() == before

    forced = pipeline(tmp_path, "force=[generate]", cluster=ray_cluster)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "[train] reused" in forced.stdout and "[generate] running" in forced.stdout
    assert "[evaluate] running" in forced.stdout

    # other sampling settings: the same training run, new samples (not a stale folder, not a retrain)
    resampled = pipeline(tmp_path, "train.sample.cfg_scale=1.5", cluster=ray_cluster)
    assert resampled.returncode == 0, resampled.stderr[-3000:]
    assert "[train] reused" in resampled.stdout and "sampling settings changed" in resampled.stdout
    assert "[evaluate] running" in resampled.stdout
    (manifest,) = (tmp_path / "samples" / "mnist_sample").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["settings"]["cfg_scale"] == 1.5


def test_a_killed_pipeline_continues_its_training_run(tmp_path, ray_cluster):
    """The pipeline killed mid-training (its driver and the Ray cluster it started, as a closed
    laptop or a lost node does): the same command again continues that run from its checkpoint,
    rather than training from scratch, and finishes it."""
    import signal

    from test_train_job import run_dirs, summary, wait_for_checkpoint

    # long enough to be killed mid-way; the samples drawn here in one process (Ray Data is the other tests')
    longer = ("train.optim.epochs=8", "train.trainer.num_workers=1", "generate_engine=local")
    proc = pipeline(tmp_path, *longer, popen=True)
    try:
        ray_dir = wait_for_checkpoint(tmp_path, proc, timeout=600)  # (after the tokenizer)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (killed,) = run_dirs(tmp_path)
    assert os.path.basename(killed) == os.path.basename(ray_dir)
    again = pipeline(tmp_path, *longer, cluster=ray_cluster)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert f"[train] continuing run {os.path.basename(killed)}" in again.stdout and "[tokenize] reused" in again.stdout
    assert run_dirs(tmp_path) == [killed]  # no second run
    s = summary(tmp_path, killed)
    assert s["resumed"] is not None and s["final"]["epoch"] == 7


def test_pipeline_bad_stage_key_is_one_line_before_any_work(tmp_path):
    proc = pipeline(tmp_path, "train.optim.lr=-1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: optim.lr")
    assert not (tmp_path / "codebook").exists()
    proc = pipeline(tmp_path, "force=[everything]")
    assert proc.returncode == 2 and "force" in proc.stderr
