"""Ray Tune sweeps end to end: real Ray (a local cluster on 2 CPUs), real Ray Train trials,
a real MLflow store, real files. Each sweep is a subprocess with a timeout, so a hang fails."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY, job_env, learnable_codes

from arplatform.config.tune_space import apply_params, is_integer_key, parse_space, tune_domains
from arplatform.core.checkpoint import load_model
from arplatform.core.errors import ConfigError
from arplatform.outputs.sweeps import sort_rows

# embed_dim × lr; lr 1e-6 barely moves the loss, so ASHA stops at least one of those trials
SPACE = "+space={model: {embed_dim: {grid: [16, 32]}}, optim: {lr: {grid: [0.01, 0.000001]}}}"


def run_tune(root, data, *overrides, timeout=600, popen=None, cluster=None):
    cmd = [sys.executable, "-m", "arplatform", "tune", "--config-name", "tune/mnist_sample", "~space", SPACE,
           "search.num_samples=1", "search.max_concurrent_trials=2", "asha.grace_period=1",
           f"train.output_root={root}", f"train.data.codebook_dir={data}", *[f"train.{o}" for o in TINY],
           "train.trainer.num_workers=1", "train.trainer.cpus_per_worker=0.25", "train.optim.epochs=3", *overrides]
    env = job_env(cluster)
    if popen is not None:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _read(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # a socket, or gone
        return b""


def trial_states(root):
    base = os.path.join(root, "tune")
    out = {}
    for sweep in os.listdir(base) if os.path.isdir(base) else []:
        trials = os.path.join(base, sweep, "trials")
        for t in os.listdir(trials) if os.path.isdir(trials) else []:
            try:
                with open(os.path.join(trials, t, "run.json")) as f:
                    out[t] = json.load(f)
            except (OSError, ValueError):
                pass
    return out


def wait_for_a_finished_trial(root, proc, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        done = [t for t, s in trial_states(root).items() if s.get("tune_outcome") == "complete"]
        if done:
            return done[0]
        time.sleep(0.5)
    raise AssertionError("no trial finished")


@pytest.mark.slow
def test_sweep_killed_then_resumed_completes_tracks_and_gives_a_trainable_best(tmp_path, ray_cluster):
    """The sweep is killed with the local cluster it started; it resumes on another (the suite's)."""
    data = learnable_codes(tmp_path / "codes", n=160, vae=True)
    proc = run_tune(tmp_path, data, popen={"start_new_session": True})
    try:
        first = wait_for_a_finished_trial(tmp_path, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (sweep_dir,) = [os.path.join(tmp_path, "tune", d) for d in os.listdir(tmp_path / "tune")]
    first_best = os.path.join(sweep_dir, "trials", first, "checkpoints", "best.pt")
    stamp = os.stat(first_best).st_mtime_ns
    time.sleep(3)  # let orphaned workers notice their raylet is gone

    # S3 users set AWS_* credentials; Tune would copy them into every trial's runtime_env, which
    # Ray's runtime-env agent logs in clear
    secret = f"secret-{os.urandom(8).hex()}"
    again = run_tune(tmp_path, data, "resume=true", "register_best=true", cluster=ray_cluster | {
        "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": secret})
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "(resumed)" in out
    assert "Exception ignored" not in out, out  # a trial process ends with its trial, not by a SIGTERM (N25)
    leaks = [os.path.join(d, f) for top in (ray_cluster["ARPLATFORM_TEST_RAY_TEMP"], str(tmp_path))
             for d, _, files in os.walk(top) for f in files if secret.encode() in _read(os.path.join(d, f))]
    assert not leaks and secret not in out, leaks
    with open(os.path.join(sweep_dir, "leaderboard.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4, rows
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {"FINISHED", "STOPPED"} and "STOPPED" in statuses and "FINISHED" in statuses, rows
    assert os.stat(first_best).st_mtime_ns == stamp, "a trial that had finished was trained again"
    for r in rows:  # each trial trained the model it was given
        model, _, _ = load_model(os.path.join(sweep_dir, "trials", r["trial"], "checkpoints", "best.pt"))
        assert model.config.embed_dim == int(r["model.embed_dim"]), r
    assert float(rows[0]["best_val_loss"]) <= min(float(r["best_val_loss"]) for r in rows)

    from mlflow.tracking import MlflowClient

    with open(os.path.join(sweep_dir, "sweep.json")) as f:
        state = json.load(f)
    client = MlflowClient(state["tracking_uri"])
    parent = client.get_run(state["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and state["status"] == "FINISHED"
    assert parent.data.tags["best_trial"] == rows[0]["trial"]
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    by_trial = {c.data.tags["trial_id"]: c for c in children}
    for r in rows:
        child = by_trial[r["trial"]]
        assert child.info.status == {"FINISHED": "FINISHED", "STOPPED": "KILLED"}[r["status"]], r
        assert int(child.data.params["model.embed_dim"]) == int(r["model.embed_dim"])
        assert "val/loss" in child.data.metrics
    # register_best=true: the best trial's model, registered from its own run
    (version,) = client.search_model_versions("name='arplatform-mnist_sample'")
    assert version.run_id == by_trial[rows[0]["trial"]].info.run_id and "best model:  models:/arplatform-" in out
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "best.yaml", "parallel.png", "curves.png", "report.md"} <= artifacts
    report = open(os.path.join(sweep_dir, "report.md")).read()
    assert "![parallel](parallel.png)" in report and "![curves](curves.png)" in report

    best = subprocess.run([sys.executable, "-m", "arplatform", "train", "--config-dir", sweep_dir, "--config-name",
                           "best"], capture_output=True, text=True, timeout=300, env=job_env(ray_cluster))
    assert best.returncode == 0, best.stdout + best.stderr
    runs_dir = os.path.join(tmp_path, "transformer", "mnist_sample", "runs")
    (run,) = os.listdir(runs_dir)
    model, _, _ = load_model(os.path.join(runs_dir, run, "checkpoints", "best.pt"))
    assert model.config.embed_dim == int(rows[0]["model.embed_dim"])


@pytest.mark.slow
def test_over_budget_sweep_is_refused_before_any_trial(tmp_path):
    data = learnable_codes(tmp_path / "codes", n=160)
    proc = run_tune(tmp_path, data, "search.max_concurrent_trials=3", "train.trainer.cpus_per_worker=1",
                    timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines[-1].startswith("error: search.max_concurrent_trials: 3 trials") and "lower" in lines[-1]
    assert not os.path.exists(tmp_path / "tune") and not os.path.exists(tmp_path / "ray")


def test_space_parses_to_tune_domains_and_applies_to_the_job():
    from ray.tune.search.sample import Categorical, Float, Integer

    axes = parse_space({"model": {"embed_dim": {"grid": [16, 32]}, "num_layers": {"uniform": [1, 4]},
                                  "seq_len": {"choice": [None, 8]}},
                        "optim": {"lr": {"loguniform": [1e-4, 1e-2]}}})
    assert [a.key for a in axes] == ["model.embed_dim", "model.num_layers", "model.seq_len", "optim.lr"]
    domains = tune_domains(axes)
    assert domains["model.embed_dim"] == {"grid_search": [16, 32]}
    assert isinstance(domains["model.num_layers"], Integer) and isinstance(domains["optim.lr"], Float)
    assert isinstance(domains["model.seq_len"], Categorical)
    assert is_integer_key("model.seq_len") and not is_integer_key("optim.lr")
    job = {"model": {"embed_dim": 8}, "optim": {"lr": 1.0}}
    assert apply_params(job, {"model.embed_dim": 32}) == {"model": {"embed_dim": 32}, "optim": {"lr": 1.0}}
    assert job["model"]["embed_dim"] == 8  # a copy
    with pytest.raises(ConfigError, match="space.data"):
        parse_space({"data": {"codes": {"choice": ["a"]}}})


def test_sweep_folders_and_resume_rules(tmp_path):
    """Sweeps keep their records as runs do (`runs.py`): a unique name, claimed once; resume finds
    the latest started sweep of the same tune config, and none is one line."""
    from arplatform.core.errors import RunStateError
    from arplatform.outputs import storage, sweeps

    root = storage.Root(str(tmp_path))
    a, b = sweeps.new_sweep(root, "grid"), sweeps.new_sweep(root, "grid")
    assert a.name != b.name and a.name.startswith("grid-")
    assert sweeps.read_state(a)["status"] == "RUNNING" and sweeps.read_state(a)["sweep_config"] == "grid"
    sweeps.new_sweep(root, "grid", "taken")
    with pytest.raises(RunStateError, match="sweep 'taken' exists; pass resume=true"):
        sweeps.new_sweep(root, "grid", "taken")
    assert sweeps.find_sweep(root, "grid").name == "taken"
    with pytest.raises(RunStateError, match="resume=true but tune config 'other' has no earlier sweep"):
        sweeps.find_sweep(root, "other")


def test_leaderboard_puts_failed_trials_last():
    rows = sort_rows([{"trial": "a", "best_val_loss": None}, {"trial": "b", "best_val_loss": 2.0},
                      {"trial": "c", "best_val_loss": float("nan")}, {"trial": "d", "best_val_loss": 1.0}])
    assert [r["trial"] for r in rows][:2] == ["d", "b"] and [r["rank"] for r in rows] == [1, 2, 3, 4]


def test_sweep_pictures_and_report(tmp_path):
    """parallel.png and curves.png from leaderboard rows of every kind (a log-scale lr, a
    categorical axis, a failed trial with no metric, an ASHA-stopped shorter curve), and a
    report.md that shows both beside the leaderboard."""
    from PIL import Image

    from arplatform.tracking.sweep_pictures import axis_positions, write_all

    rows = [
        {"trial": "t1", "optim.lr": 0.01, "model.embed_dim": 32, "optim.precision": "fp32", "best_val_loss": 0.9,
         "status": "FINISHED", "curve": [[1, 1.6], [2, 1.1], [3, 0.9]]},
        {"trial": "t2", "optim.lr": 1e-6, "model.embed_dim": 16, "optim.precision": "bf16", "best_val_loss": 2.7,
         "status": "STOPPED", "curve": [[1, 2.8], [2, 2.7]]},
        {"trial": "t3", "optim.lr": 1e-4, "model.embed_dim": 16, "optim.precision": "fp32", "best_val_loss": None,
         "status": "FAILED", "curve": []},
    ]
    (tmp_path / "leaderboard.md").write_text("| rank | trial |\n|---|---|\n| 1 | t1 |\n")
    keys = ["optim.lr", "model.embed_dim", "optim.precision"]
    written = write_all(str(tmp_path), "s", rows, keys, "best_val_loss", "best val/loss")
    assert [os.path.basename(p) for p in written] == ["parallel.png", "curves.png", "report.md"]
    for name in ("parallel.png", "curves.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    report = (tmp_path / "report.md").read_text()
    assert "![parallel](parallel.png)" in report and "![curves](curves.png)" in report
    assert "Best: trial t1, 0.9." in report and "| 1 | t1 |" in report
    assert axis_positions([1e-6, 1e-4, 1e-2])[0] == [0.0, 0.5, 1.0]  # log scale across 10^4
    assert axis_positions(["fp32", "bf16", "fp32"])[0] == [1.0, 0.0, 1.0]
    assert write_all(str(tmp_path / "none"), "s", rows[2:], keys, "best_val_loss", "x")[-1].endswith("report.md")


def test_a_sweep_of_a_million_trials_is_refused_before_ray(tmp_path):
    import contextlib
    import io

    from arplatform.cli import tune as tune_cli

    data = learnable_codes(tmp_path / "codes", n=64)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = tune_cli.main(["--config-name", "tune/mnist_sample", "~space", SPACE, "search.num_samples=100000",
                              f"train.output_root={tmp_path}", f"train.data.codebook_dir={data}"])
    line = err.getvalue().strip()
    assert code == 2 and "search.num_samples: 100000 × the grid's 2 (model.embed_dim) × 2 (optim.lr) = 400,000 " \
        "trials; at most 10,000" in line and line.count("\n") == 0, line
    assert not (tmp_path / "tune").exists() and not (tmp_path / "ray").exists()


def test_a_sweep_whose_every_trial_failed_ends_in_one_line():
    """Both sweeps end this way (exit 2 through the commands), not with a leaderboard of failures
    and exit 0; one trial that ran is enough."""
    from arplatform.core.errors import TrainingError
    from arplatform.outputs.sweeps import check_a_trial_ran

    errors = [RuntimeError("Trial raised:\n  CUDA out of memory\n  at step 3"), ValueError("nan")]
    with pytest.raises(TrainingError, match=r"every trial of the sweep failed \(/s\); the first: "
                                            r"Trial raised: CUDA out of memory at step 3$"):
        check_a_trial_ran(errors, "/s")
    check_a_trial_ran([None, *errors], "/s")
    check_a_trial_ran([], "/s")
