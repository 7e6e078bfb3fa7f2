"""The Ray Train job end to end: real Ray (local cluster, 2 CPU workers), a real MLflow
sqlite store, real files. Each run is a subprocess with a timeout, so a hang fails."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import learnable_codes, run_train

from arplatform.config import ConfigError, TrainJobConfig, from_dict
from arplatform.core.checkpoint import load_model
from arplatform.core.errors import CheckpointError, DataError
from arplatform.distributed.data import preflight, resolve_files
from arplatform.distributed.train_job import resolve_run

pytestmark = pytest.mark.slow


def summary(root):
    with open(os.path.join(root, "transformer", "mnist_sample", "summary.json")) as f:
        return json.load(f)


def wait_for_checkpoint(root, proc, timeout=180):
    """The Ray run folder once Ray's controller has *registered* a checkpoint.

    A checkpoint folder appears in storage before the controller records it in its
    snapshot; a process killed in between loses that report (RAY_NOTES §2), and the
    retry would rightly start from the previous registered checkpoint, or none.
    """
    deadline = time.time() + timeout
    state = os.path.join(root, "transformer", "mnist_sample", "run.json")
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if os.path.exists(state):
            with open(state) as f:
                run_dir = os.path.join(root, "ray", json.load(f)["run_name"])
            snapshot = os.path.join(run_dir, "checkpoint_manager_snapshot.json")
            if os.path.exists(snapshot):
                try:
                    with open(snapshot) as f:
                        if json.load(f).get("latest_checkpoint_result"):
                            return run_dir
                except ValueError:  # caught mid-write
                    pass
        time.sleep(0.2)
    raise AssertionError("no checkpoint was registered")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    data = learnable_codes(root / "codes")
    proc = run_train(root, data, "optim.epochs=4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, data, proc


def test_two_workers_learn_checkpoint_and_track(trained):
    root, data, proc = trained
    s = summary(root)
    assert s["world_size"] == 2 and s["resumed"] is None and s["final"]["epoch"] == 3
    out = root / "transformer" / "mnist_sample"
    model, layout, ckpt = load_model(out / "checkpoints" / "best.pt")
    assert layout.num_codes == 16 and layout.num_classes == 4 and ckpt["grid_shape"] == [4, 4]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert "optimizer_state_dict" in last and last["epoch"] == 3
    samples = np.load(out / "samples_codes.npy")
    assert samples.shape == (8, 16) and samples.min() >= 0 and samples.max() < 16

    from mlflow.tracking import MlflowClient

    client = MlflowClient(s["tracking_uri"])
    assert s["tracking_uri"] == f"sqlite:///{root}/mlflow.db"
    run = client.get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == s["run_name"]
    assert run.data.params["optim.lr"] == "0.01" and run.data.params["batch.global"] == "32"
    val = [m.value for m in client.get_metric_history(run.info.run_id, "val/loss")]
    train = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(val) == 4 and val[-1] < val[0] - 0.3 and val[-1] < math.log(16) / 2
    assert train and len(client.get_metric_history(run.info.run_id, "val/bits_per_token")) == 4
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.pt", "config.json", "samples_codes.npy"} <= artifacts
    assert not (root / "mlruns").exists() and not os.path.exists("mlruns")  # nothing scattered


def test_logs_are_quiet(trained):
    _, _, proc = trained
    text = proc.stdout + proc.stderr
    assert "Reporting training result" not in text and "Checkpoint successfully created" not in text
    assert "RayDeprecationWarning" not in text and "Creating initial MLflow" not in text
    assert text.count("epoch ") >= 4  # the platform's own per-epoch lines
    assert len(text.strip().splitlines()) < 30, text


def test_worker_killed_mid_run_resumes_from_checkpoint(tmp_path):
    data = learnable_codes(tmp_path / "codes", n=640)
    proc = run_train(tmp_path, data, "optim.epochs=14", "trainer.max_failures=2", popen={})
    try:
        wait_for_checkpoint(tmp_path, proc)
        workers = [int(line.split()[0]) for line in subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
            if "RayTrainWorker" in line and "ps -eo" not in line]
        assert workers, "no Ray Train worker process found"
        os.kill(workers[-1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    s = summary(tmp_path)
    assert s["resumed"] is not None and s["resumed"]["epoch"] >= 0, out  # from a checkpoint, not from scratch
    assert s["final"]["epoch"] == 13 and "resuming from epoch" in out


def test_driver_killed_then_resume_true_continues(tmp_path):
    data = learnable_codes(tmp_path / "codes", n=640)
    proc = run_train(tmp_path, data, "optim.epochs=14", popen={"start_new_session": True})
    try:
        wait_for_checkpoint(tmp_path, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with open(tmp_path / "transformer" / "mnist_sample" / "run.json") as f:
        first = json.load(f)
    time.sleep(3)  # let orphaned workers notice their raylet is gone
    again = run_train(tmp_path, data, "optim.epochs=14", "resume=true")
    assert again.returncode == 0, again.stdout + again.stderr
    s = summary(tmp_path)
    assert s["run_name"] == first["run_name"] and s["mlflow_run_id"] == first["mlflow_run_id"]
    assert s["resumed"] is not None and s["resumed"]["epoch"] >= 0
    assert s["final"]["epoch"] == 13


def test_resume_with_broken_checkpoint_stops_with_clear_error(trained, tmp_path):
    root, data, _ = trained
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("mlflow.db"))
    run_json = copy / "transformer" / "mnist_sample" / "run.json"
    state = json.loads(run_json.read_text())
    ray_dir = copy / "ray" / state["run_name"]
    # point Ray's snapshot at the copied folders, then truncate every reported last.pt
    snap = ray_dir / "checkpoint_manager_snapshot.json"
    snap.write_text(snap.read_text().replace(str(root), str(copy)))
    for d in ray_dir.iterdir():
        if d.is_dir() and d.name.startswith("checkpoint_"):
            (d / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    proc = run_train(copy, data, "optim.epochs=4", "resume=true", "tracking.enabled=false")
    assert proc.returncode == 2
    assert "last.pt: unreadable or truncated checkpoint" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


# -- driver-side checks: no Ray needed ---------------------------------------


def job(**data):
    return from_dict(TrainJobConfig, {"data": data})


def test_preflight_refuses_bad_data_before_any_worker(tmp_path):
    data = learnable_codes(tmp_path / "codes")
    codes = np.load(os.path.join(data, "codes.npy"))
    codes[5, 2] = 99
    np.save(os.path.join(data, "codes.npy"), codes)
    cfg = job(codebook_dir=data, invalid_codes="error")
    with pytest.raises(DataError, match=r"codes.npy: 1 invalid codes \(outside 0..15\), first at row 5"):
        preflight(cfg.data, resolve_files(cfg.data))
    np.save(os.path.join(data, "codes.npy"), codes.astype(np.float32))
    with pytest.raises(DataError, match="codes.npy: codes must be integers"):
        preflight(cfg.data, resolve_files(cfg.data))
    np.save(os.path.join(data, "labels.npy"), np.zeros(3, dtype=np.int64))
    np.save(os.path.join(data, "codes.npy"), codes.astype(np.int32))
    with pytest.raises(DataError, match="labels.npy: expected 320 labels"):
        preflight(cfg.data, resolve_files(cfg.data))


def test_cli_bad_data_fails_fast_without_ray(tmp_path):
    data = learnable_codes(tmp_path / "codes")
    np.save(os.path.join(data, "codes.npy"), np.zeros((10, 4, 4, 1), dtype=np.int64))
    t0 = time.time()
    proc = run_train(tmp_path, data, timeout=60)
    assert proc.returncode == 2 and "codes.npy: codes must be shaped" in proc.stderr
    assert time.time() - t0 < 30 and not (tmp_path / "ray").exists()


def test_run_names_and_resume_rules(tmp_path):
    cfg = from_dict(TrainJobConfig, {"output_root": str(tmp_path), "data": {"codes": "x.npy"}})
    a, _, _ = resolve_run(cfg, str(tmp_path / "out"), str(tmp_path / "ray"))
    b, _, _ = resolve_run(cfg, str(tmp_path / "out"), str(tmp_path / "ray"))
    assert a != b and a.startswith("mnist_sample-")  # fresh runs never reuse a name
    os.makedirs(tmp_path / "ray" / "taken")
    named = from_dict(TrainJobConfig, {"run_name": "taken", "data": {"codes": "x.npy"}})
    with pytest.raises(CheckpointError, match="run 'taken' exists; pass resume=true"):
        resolve_run(named, str(tmp_path / "out"), str(tmp_path / "ray"))
    resume = from_dict(TrainJobConfig, {"resume": True, "data": {"codes": "x.npy"}})
    with pytest.raises(CheckpointError, match="resume=true but this config has no earlier run"):
        resolve_run(resume, str(tmp_path / "out"), str(tmp_path / "ray"))


def test_config_errors_name_the_key():
    from arplatform.cli import compose

    with pytest.raises(ConfigError, match="Could not override 'optim.learning_rate'"):
        compose("transformer/mnist_small", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="optim.batch_size: expected int"):
        from_dict(TrainJobConfig, compose("transformer/mnist_small", ["optim.batch_size=big"]))
    with pytest.raises(ConfigError, match="unknown key model.depth; valid keys of model: seq_len, embed_dim"):
        from_dict(TrainJobConfig, {"model": {"depth": 3}, "data": {"codes": "x"}})
    with pytest.raises(ConfigError, match="data.invalid_codes: 'skip' is not one of unk, error, drop"):
        from_dict(TrainJobConfig, compose("transformer/mnist_small", ["data.invalid_codes=skip"]))
    proc = subprocess.run([sys.executable, "-m", "arplatform.train", "--config-name", "transformer/mnist_small",
                           "trainer.num_workers=two"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: trainer.num_workers: expected int")
