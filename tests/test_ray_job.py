"""`ray job submit` against a local head on loopback with token authentication on: a sweep,
and the refusal of a submission without the token. (`test_two_nodes.py` submits the whole
pipeline, training included, to two nodes.)"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from helpers import RAY, TINY, learnable_codes, start_head, stop_process_group

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def head():
    """A Ray head on 127.0.0.1 with its own token, temp dir and ports, in a process group of its
    own (`ray start` leaves its daemons in it); that group is stopped afterwards."""
    tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        group, join, address = start_head(tmp, 2, dict(os.environ))
        try:
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | join
            env.pop("RAY_ADDRESS")  # `ray job` talks to the jobs API at `address`
            yield env, address, tmp
        finally:
            stop_process_group(group)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_job_submit_runs_a_sweep(head, tmp_path):
    """A one-trial sweep submitted as a job: the trial's Ray Train run starts on the job's cluster."""
    env, address, _ = head
    data = learnable_codes(tmp_path / "codes", n=160)
    out = tmp_path / "out"
    sid = f"arplatform-tune-{int(time.time())}"
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--submission-id", sid, "--working-dir", REPO, "--",
         sys.executable, "-m", "arplatform.tune", "--config-name", "tune/mnist_sample", "~space",
         "+space={model: {embed_dim: {grid: [16]}}}", "search.num_samples=1", "asha.enabled=false",
         f"train.output_root={out}", f"train.data.codebook_dir={data}", "train.optim.epochs=2",
         "train.trainer.cpus_per_worker=0.25", *[f"train.{o}" for o in TINY]],
        env=env, capture_output=True, text=True, timeout=600)
    status = subprocess.run([RAY, "job", "status", "--address", address, sid], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "succeeded" in status.stdout.lower(), submit.stdout[-3000:] + submit.stderr[-3000:]
    (sweep,) = os.listdir(out / "tune")
    assert (out / "tune" / sweep / "best.yaml").exists() and "| 1 |" in submit.stdout


def test_job_submit_without_token_is_refused(head):
    env, address, tmp = head
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run([RAY, "job", "list", "--address", address], env=no_token, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "Unauthorized" in proc.stdout + proc.stderr
