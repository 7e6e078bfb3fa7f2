"""The Ray Train job end to end: real Ray (local cluster, 2 CPU workers), a real MLflow
sqlite store, real files. Each run is a subprocess with a timeout, so a hang fails."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import descendants, learnable_codes, run_train, tracebacks

from arplatform.config import ConfigError, TrainJobConfig, from_dict
from arplatform.core.checkpoint import load_model
from arplatform.core.errors import DataError, RunStateError
from arplatform.core.io import scratch_parent
from arplatform.distributed.code_data import preflight, resolve_files
from arplatform.outputs import runs, storage

pytestmark = pytest.mark.slow


def run_dirs(root):
    base = os.path.join(root, "transformer", "mnist_sample", "runs")
    return sorted(os.path.join(base, d) for d in os.listdir(base)) if os.path.isdir(base) else []


def summary(root, run_dir=None):
    """The summary of `run_dir`, or of the root's only run."""
    if run_dir is None:
        (run_dir,) = run_dirs(root)
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def registered_checkpoint(run_dir):
    """The checkpoint Ray Train registered for a run folder (its public `Result.from_path`), or None."""
    from ray.train import Result

    try:
        return Result.from_path(run_dir).checkpoint
    except Exception:  # noqa: BLE001 - no state yet, or caught mid-write
        return None


def wait_for_checkpoint(root, proc, timeout=180):
    """The Ray run folder once Ray's controller has *registered* a checkpoint.

    A checkpoint folder appears in storage before the controller records it in its
    state; a process killed in between loses that report (docs/ray.md, "Fault tolerance"), and the
    retry would rightly start from the previous registered checkpoint, or none.
    """
    deadline = time.time() + timeout
    known = set(run_dirs(root))
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        new = [d for d in run_dirs(root) if d not in known]
        if new:
            run_dir = os.path.join(root, "ray", os.path.basename(new[0]))
            if registered_checkpoint(run_dir) is not None:
                return run_dir
        time.sleep(0.2)
    raise AssertionError("no checkpoint was registered")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("job")
    data = learnable_codes(root / "codes")
    proc = run_train(root, data, "optim.epochs=4", "model.activation_checkpointing=true", cluster=ray_cluster)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, data, proc


def test_two_workers_learn_checkpoint_and_track(trained):
    root, data, proc = trained
    s = summary(root)
    assert s["world_size"] == 2 and s["resumed"] is None and s["final"]["epoch"] == 3
    assert s["activation_checkpointing"] is True and s["strategy"] == "ddp"  # (DDP over checkpointed blocks)
    # where the time before the first step went, phase by phase, adding up to the first step
    phases = dict(s["startup"]["phases_s"])
    assert list(phases)[:2] == ["imports and checks", "Ray"] and list(phases)[-1] == "first batch"
    assert all(v >= 0 for v in phases.values()) and 0 < s["startup"]["first_step_s"] < s["seconds"] + 5
    assert abs(sum(phases.values()) - s["startup"]["first_step_s"]) < 0.1
    assert "start-up: imports and checks" in proc.stdout
    # a line per log step says where the run is and how long it has left (the total: 4 epochs × steps)
    total = 4 * s["steps_per_epoch"]
    assert re.search(rf"step \d+/{total} \(\d+%\): train/loss", proc.stdout), proc.stdout[-2000:]
    out = root / "transformer" / "mnist_sample"
    run = out / "runs" / s["run_name"]
    assert s["run_dir"] == str(run) and s["published"] == str(out / "checkpoints" / "best.pt")
    model, layout, ckpt = load_model(out / "checkpoints" / "best.pt")  # the seed's path, published
    assert layout.num_codes == 16 and layout.num_classes == 4 and ckpt["grid_shape"] == [4, 4]
    assert (out / "checkpoints" / "best.pt").read_bytes() == (run / "checkpoints" / "best.pt").read_bytes()
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert "optimizer_state_dict" in last and last["epoch"] == 3
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "FINISHED"
    # the codebook it trained on, by path and by identity, in run.json and in every checkpoint
    from arplatform.core.io import file_sha256 as sha256

    codebook = os.path.realpath(os.path.join(data, "codebook.pt"))
    assert state["codebook_pt"] == codebook and state["codebook_sha256"] == sha256(codebook)
    assert ckpt["train_config"]["codebook_sha256"] == sha256(codebook)
    assert last["train_config"]["codebook_pt"] == codebook
    samples = np.load(run / "samples_codes.npy")
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


def train_workers(driver_pid: int) -> list[int]:
    """The Ray Train worker processes of the local cluster a driver started: its descendants
    only, never those of another cluster on the machine."""
    return [pid for pid, args in descendants(driver_pid) if "RayTrainWorker" in args]


def test_worker_killed_mid_run_resumes_from_checkpoint(tmp_path):
    data = learnable_codes(tmp_path / "codes", n=640)
    # its own cluster; the rows streamed by Ray Data (the path large data takes) through the kill
    proc = run_train(tmp_path, data, "optim.epochs=14", "trainer.max_failures=2", "data.materialize=false", popen={})
    try:
        wait_for_checkpoint(tmp_path, proc)
        workers = train_workers(proc.pid)
        assert workers, "no Ray Train worker process found"
        os.kill(workers[-1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    s = summary(tmp_path)
    assert s["resumed"] is not None and s["resumed"]["epoch"] >= 0, out  # from a checkpoint, not from scratch
    assert s["final"]["epoch"] == 13 and "resuming from epoch" in out
    # the killed worker's checkpoint copies (no `finally` ran): removed by the worker that replaced it
    assert not [n for n in os.listdir(scratch_parent()) if n.startswith(f"checkpoints-{workers[-1]}-")]


def test_driver_killed_then_resume_true_continues(tmp_path, ray_cluster):
    """A finished run is published; a second run killed mid-way, with the local cluster it
    started, leaves the seed's path as it was; resume=true (here on another cluster, as from
    another machine) continues the killed run (same Ray and MLflow runs) and publishes it."""
    data = learnable_codes(tmp_path / "codes", n=640)
    one = "trainer.num_workers=1"  # (a kill and a resume need no second worker)
    first = run_train(tmp_path, data, "optim.epochs=1", one, cluster=ray_cluster)
    assert first.returncode == 0, first.stdout + first.stderr
    seed_path = tmp_path / "transformer" / "mnist_sample" / "checkpoints" / "best.pt"
    published = seed_path.read_bytes()
    proc = run_train(tmp_path, data, "optim.epochs=14", one, popen={"start_new_session": True})
    try:
        ray_dir = wait_for_checkpoint(tmp_path, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed = os.path.join(tmp_path, "transformer", "mnist_sample", "runs", os.path.basename(ray_dir))
    with open(os.path.join(killed, "run.json")) as f:
        state = json.load(f)
    assert state["status"] == "RUNNING" and seed_path.read_bytes() == published  # unchanged by the killed run
    time.sleep(3)  # let orphaned workers notice their raylet is gone
    # other settings, or a driver alive on the run: one line each, before Ray, the run untouched (N9, N14, N15)
    for changed in (["optim.lr=0.02"], ["model.num_layers=2"], ["optim.epochs=20"]):
        refused = run_train(tmp_path, data, "optim.epochs=14", one, "resume=true", *changed, timeout=120)
        assert refused.returncode == 2 and "started with other settings" in refused.stderr, refused.stderr
        assert refused.stderr.strip().count("\n") == 0, refused.stderr
    from filelock import FileLock

    with FileLock(os.path.join(killed, ".driver.lock")):
        busy = run_train(tmp_path, data, "optim.epochs=14", one, "resume=true", timeout=120)
    assert busy.returncode == 2 and "another driver is training run" in busy.stderr, busy.stderr
    with open(os.path.join(killed, "run.json")) as f:
        assert json.load(f) == state
    again = run_train(tmp_path, data, "optim.epochs=14", one, "resume=true", cluster=ray_cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    s = summary(tmp_path, killed)
    assert s["run_name"] == state["run_name"] and s["mlflow_run_id"] == state["mlflow_run_id"]
    assert s["resumed"] is not None and s["resumed"]["epoch"] >= 0
    assert s["final"]["epoch"] == 13
    assert seed_path.read_bytes() == open(os.path.join(killed, "checkpoints", "best.pt"), "rb").read()
    from mlflow.tracking import MlflowClient

    assert MlflowClient(s["tracking_uri"]).get_run(s["mlflow_run_id"]).info.status == "FINISHED"


def test_sigterm_ends_the_run_killed_with_one_line(tmp_path, ray_cluster):
    """`ray job stop` and schedulers send SIGTERM: once Ray has started, the run still ends
    KILLED in run.json and MLflow, the command exits 130 with "interrupted", and no C++ crash
    dump reaches the user. (ray.init installs its handlers whether it starts a cluster or
    joins one; the driver-kill test covers a local cluster's end.)"""
    data = learnable_codes(tmp_path / "codes", n=640)
    proc = run_train(tmp_path, data, "optim.epochs=14", "trainer.num_workers=1", popen={}, cluster=ray_cluster)
    try:
        ray_dir = wait_for_checkpoint(tmp_path, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in out.splitlines(), out[-3000:]
    assert "SIGTERM received" not in out and not tracebacks(out), out[-3000:]
    run_dir = os.path.join(tmp_path, "transformer", "mnist_sample", "runs", os.path.basename(ray_dir))
    with open(os.path.join(run_dir, "run.json")) as f:
        state = json.load(f)
    assert state["status"] == "KILLED"
    from mlflow.tracking import MlflowClient

    assert MlflowClient(state["tracking_uri"]).get_run(state["mlflow_run_id"]).info.status == "KILLED"


def test_two_runs_of_one_config_at_once_in_a_fresh_root(tmp_path, ray_cluster):
    """Both finish with their own checkpoints and MLflow runs (the sqlite store is created by
    two processes at once); the seed's path names one of them, complete. Each starts a local
    cluster of its own beside the suite's: three Ray clusters on one machine, and no Ray
    process of either job mistakes another's for its own."""
    data = learnable_codes(tmp_path / "codes")
    procs = [run_train(tmp_path, data, "optim.epochs=2", f"optim.seed={seed}", "trainer.num_workers=1", popen={})
             for seed in (1, 2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for out in outs:
        assert not tracebacks(out) and "multiple active Ray instances" not in out, out
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    bests = {open(os.path.join(d, "checkpoints", "best.pt"), "rb").read() for d in dirs}
    assert len(bests) == 2  # different seeds, different weights: nothing was shared
    seed_path = tmp_path / "transformer" / "mnist_sample" / "checkpoints" / "best.pt"
    assert seed_path.read_bytes() in bests
    load_model(seed_path)
    from mlflow.tracking import MlflowClient

    sums = [summary(tmp_path, d) for d in dirs]
    client = MlflowClient(sums[0]["tracking_uri"])
    assert len({s["mlflow_run_id"] for s in sums}) == 2
    assert all(client.get_run(s["mlflow_run_id"]).info.status == "FINISHED" for s in sums)


def test_resume_with_broken_checkpoint_stops_with_clear_error(trained, tmp_path):
    root, data, _ = trained
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("mlflow.db"))
    (run_dir,) = run_dirs(copy)
    ray_dir = copy / "ray" / os.path.basename(run_dir)
    # truncate every last.pt of the copy: Ray's state still names the original's files, and the
    # resume checks the bytes in the copy's own folder (what `jobs.training.own_copy` resolves)
    for d in ray_dir.iterdir():
        if d.is_dir() and d.name.startswith("checkpoint_"):
            (d / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    proc = run_train(copy, data, "optim.epochs=4", "resume=true", "tracking.enabled=false")
    assert proc.returncode == 2
    assert "last.pt: unreadable or truncated checkpoint" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_sweepable_trainer_plans_each_job_from_its_config(tmp_path):
    """build_trainer, as a Tune trial calls it: two jobs on the same checked data and row datasets
    that differ in embed_dim, seq_len and batch_size train models, windows and step counts of their own."""
    import ray

    from arplatform.distributed.cluster import init_ray
    from arplatform.distributed.code_data import build_rows
    from arplatform.jobs.training import build_trainer, check_data, copy_checkpoint_files

    data = learnable_codes(tmp_path / "codes")
    base = {"name": "m", "output_root": str(tmp_path), "data": {"codebook_dir": data}, "tracking": {"enabled": False},
            "trainer": {"num_workers": 1}, "optim": {"epochs": 1, "warmup_steps": 1}}
    jobs = [from_dict(TrainJobConfig, base | {"model": {"embed_dim": e, "seq_len": s, "num_layers": 1, "num_heads": 2},
                                              "optim": base["optim"] | {"batch_size": b}})
            for e, s, b in ((32, None, 16), (48, 8, 40))]
    files, facts = check_data(jobs[0])
    init_ray(2)  # the platform's own local cluster, in this process
    try:
        train, val, facts = build_rows(files, facts, jobs[0].data, 0)
        results = []
        for job in jobs:
            run = runs.new_run(storage.Root(job.output_root), job.name)
            results.append((run, build_trainer(job, facts, {"train": train, "val": val}, run).fit()))
    finally:
        ray.shutdown()
    (run_a, res_a), (run_b, res_b) = results
    for run, res in results:  # the checkpoints are in Ray's storage; the driver copies them to the run
        copy_checkpoint_files(res.checkpoint, run.checkpoint_dir)
    ckpt_a = load_model(os.path.join(run_a.checkpoint_dir, "last.pt"))[2]
    ckpt_b = load_model(os.path.join(run_b.checkpoint_dir, "last.pt"))[2]
    assert ckpt_a["model_config"]["embed_dim"] == 32 and ckpt_a["model_config"]["seq_len"] == 18  # 2 + 16 codes
    assert ckpt_b["model_config"]["embed_dim"] == 48 and ckpt_b["model_config"]["seq_len"] == 8
    # 320 rows: 1 window each → 320 // 16 = 20 steps; 18 inputs in windows of 8 at stride 4 → 4 windows
    assert ckpt_a["step"] == 20 and res_a.return_value["steps_per_epoch"] == 20
    assert ckpt_b["step"] == 320 * 4 // 40 == res_b.return_value["steps_per_epoch"]


# -- driver-side checks: no Ray needed ---------------------------------------


def job(**data):
    return from_dict(TrainJobConfig, {"name": "m", "data": data})


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


def test_run_folders_and_resume_rules(tmp_path):
    root = storage.Root(str(tmp_path))
    a, b = runs.new_run(root, "cfg"), runs.new_run(root, "cfg")
    assert a.name != b.name and a.name.startswith("cfg-") and os.path.dirname(a.dir) == os.path.dirname(b.dir)
    assert runs.read_state(a)["status"] == "RUNNING"
    runs.new_run(root, "cfg", "taken")
    with pytest.raises(RunStateError, match="run 'taken' exists; pass resume=true"):
        runs.new_run(root, "cfg", "taken")
    assert runs.find_run(root, "cfg").name == "taken"  # the latest started run
    with pytest.raises(RunStateError, match="resume=true but config 'other' has no earlier run"):
        runs.find_run(root, "other")
    with pytest.raises(RunStateError, match="has run 'nope'"):
        runs.find_run(root, "cfg", "nope")


def test_resume_of_a_run_that_never_started_is_one_line(tmp_path):
    data = learnable_codes(tmp_path / "codes")
    runs.new_run(storage.Root(str(tmp_path)), "mnist_sample")  # a folder, but no training ever registered
    proc = run_train(tmp_path, data, "resume=true", timeout=120)
    assert proc.returncode == 2 and "never started training" in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_config_errors_name_the_key():
    from arplatform.cli import compose

    with pytest.raises(ConfigError, match="Could not override 'optim.learning_rate'"):
        compose("transformer/mnist_small", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"^optim.batch_size: .*'big' of type 'str' could not be converted to Int"):
        compose("transformer/mnist_small", ["optim.batch_size=big"])  # Hydra's check, against the dataclass
    with pytest.raises(ConfigError, match="unknown key model.depth; valid keys of model: preset, seq_len, embed_dim"):
        from_dict(TrainJobConfig, {"model": {"depth": 3}, "data": {"codes": "x"}})
    with pytest.raises(ConfigError, match="data.invalid_codes: 'skip' is not one of unk, error, drop"):
        from_dict(TrainJobConfig, compose("transformer/mnist_small", ["data.invalid_codes=skip"]))
    proc = subprocess.run([sys.executable, "-m", "arplatform", "train", "--config-name", "transformer/mnist_small",
                           "trainer.num_workers=two"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: trainer.num_workers: "), proc.stderr
    assert "'two' of type 'str' could not be converted to Integer" in proc.stderr and proc.stderr.count("\n") == 1


def test_the_default_path_holds_out_validation_rows_where_they_are_read(tmp_path, monkeypatch):
    """No validation files (the default, data.val_fraction): each Ray Data read task decides for
    the rows it reads; the split is seeded, disjoint, covers every row, and does not depend on
    how the files are cut into tasks or on the path (held or streamed)."""
    import ray

    from arplatform.distributed import code_data
    from arplatform.distributed.cluster import init_ray
    from arplatform.jobs.training import check_data

    rng = np.random.default_rng(5)
    shards = tmp_path / "shards"
    shards.mkdir()
    all_codes = []
    for i, n in enumerate((1200, 1000, 800)):  # 3,000 rows in three files
        codes = rng.integers(0, 16, size=(n, 16)).astype(np.int32)
        all_codes.append(codes)
        np.save(shards / f"codes-{i:05d}.npy", codes)
        np.save(shards / f"labels-{i:05d}.npy", rng.integers(0, 3, n))
    everything = np.concatenate(all_codes).astype(np.int64)

    def split(seed, materialize, chunk):
        monkeypatch.setattr(code_data, "CHUNK_ROWS", chunk)
        job = from_dict(TrainJobConfig, {"name": "m", "output_root": str(tmp_path), "optim": {"seed": seed}, "data": {
            "codes": str(shards), "labels": str(shards), "num_codes": 16, "val_fraction": 0.1,
            "materialize": materialize}})
        train, val, facts = code_data.build_rows(*check_data(job), job.data, seed)
        parts = [ray.get(p.codes) if isinstance(p, code_data.HeldRows) else
                 np.stack([r["codes"] for r in p.take_all()]) for p in (train, val)]
        return [sorted(map(tuple, p.tolist())) for p in parts], facts

    init_ray(2)
    try:
        (train, val), facts = split(0, False, 256)  # 12 read tasks
        expected = code_data.held_out(np.arange(len(everything)), 0, 0.1)
        assert val == sorted(map(tuple, everything[expected].tolist()))
        assert sorted(train + val) == sorted(map(tuple, everything.tolist())) and not set(train) & set(val)
        assert facts.num_val == len(val) == expected.sum() and 0.07 < len(val) / 3000 < 0.13
        assert split(0, False, 4096)[0][1] == val  # one read task per file: the same rows
        assert split(0, True, 256)[0][1] == val  # the rows held on the driver: the same rows
        monkeypatch.setattr(code_data, "DRIVER_READ_MAX_BYTES", 0)  # held rows read by a Ray task, which the
        (_, task_val), task_facts = split(0, True, 256)  # driver does not wait for: counts from the headers
        assert task_val == val and (task_facts.num_train, task_facts.num_val) == (facts.num_train, facts.num_val)
        other = split(1, False, 256)[0][1]
        assert other != val and abs(len(other) - len(val)) < 100  # another seed, another split
    finally:
        ray.shutdown()


def test_held_and_streamed_rows_are_the_same_rows(tmp_path):
    """data.materialize: rows held in the object store and rows streamed by Ray Data are the same
    rows after the seeded validation split and the invalid-code policy; each worker's share of
    held rows is equal and disjoint, and an epoch resumed after `skip` batches continues its order."""
    import ray

    from arplatform.distributed.cluster import init_ray
    from arplatform.distributed.code_data import HeldBatches, HeldRows, build_rows
    from arplatform.jobs.training import check_data

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 16, size=(203, 16)).astype(np.int32)
    codes[rng.random(203) < 0.1, 5] = -1  # rows the drop policy removes
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "labels.npy", rng.integers(0, 3, 203))
    kept = codes[(codes >= 0).all(1)]

    def job(materialize):
        return from_dict(TrainJobConfig, {"name": "m", "output_root": str(tmp_path), "data": {
            "codes": str(tmp_path / "codes.npy"), "labels": str(tmp_path / "labels.npy"), "num_codes": 16,
            "invalid_codes": "drop", "val_fraction": 0.2, "materialize": materialize}})

    def rows(part):
        got = ray.get(part.codes) if isinstance(part, HeldRows) else np.stack([r["codes"] for r in part.take_all()])
        return sorted(map(tuple, got.tolist()))

    init_ray(2)
    try:
        (held_train, held_val, held_facts), (ds_train, ds_val, ds_facts) = (
            build_rows(*check_data(job(m)), job(m).data, 0) for m in (True, False))
        assert isinstance(held_train, HeldRows) and not isinstance(ds_train, HeldRows)
        for facts in (held_facts, ds_facts):
            assert facts.num_train + facts.num_val == len(kept) and 0.1 < facts.num_val / len(kept) < 0.3
        assert rows(held_train) + rows(held_val) != [] and sorted(rows(held_train) + rows(held_val)) == \
            sorted(map(tuple, kept.astype(np.int64).tolist())) == sorted(rows(ds_train) + rows(ds_val))
        assert rows(held_val) == rows(ds_val)  # one seeded split, whichever path reads the rows
        layout = held_facts.layout
        shares = [HeldBatches(held_train.to_dict(), layout, 18, 8, 0, rank, 2) for rank in (0, 1)]
        assert len(shares[0].x) == len(shares[1].x) == held_facts.num_train // 2
        assert not set(map(tuple, shares[0].x.tolist())) & set(map(tuple, shares[1].x.tolist()))
        epoch1 = [b["input_ids"] for b in shares[0](1)]
        assert len(epoch1) == len(shares[0].x) // 8
        assert all(torch.equal(a, b["input_ids"]) for a, b in zip(epoch1[3:], shares[0](1, skip=3), strict=True))
        assert not torch.equal(torch.cat(epoch1), torch.cat([b["input_ids"] for b in shares[0](0)]))
    finally:
        ray.shutdown()
    with pytest.raises(ConfigError, match="data.materialize must be auto, true or false, got 'yes'"):
        job("yes")


def test_only_rays_transient_notice_is_not_counted_as_a_traceback():
    notice = ("\x1b[36m(TrainController pid=7)\x1b[0m Failed to send resource request for train-1. If this only "
              "happens transiently during network partition or CPU being overloaded, it's safe to ignore this error.\n"
              "\x1b[36m(TrainController pid=7)\x1b[0m Traceback (most recent call last):\n"
              "\x1b[36m(TrainController pid=7)\x1b[0m   File \"x.py\", line 58, in send_resource_request\n"
              "\x1b[36m(TrainController pid=7)\x1b[0m ray.exceptions.GetTimeoutError: Get timed out\n")
    assert tracebacks("step 1\n" + notice + "step 2\n") == []
    ours = "\x1b[36m(RayTrainWorker pid=9)\x1b[0m Traceback (most recent call last):\n"
    assert len(tracebacks(notice + ours)) == 1 and len(tracebacks("Traceback (most recent call last):\n")) == 1
