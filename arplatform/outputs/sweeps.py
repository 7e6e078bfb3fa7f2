"""One folder per sweep: its state, its trials' run folders, the leaderboard and best.yaml.

    <output_root>/tune/<sweep name>/
        sweep.json            state: status, config, MLflow parent run, Tune experiment path
        trials/<trial id>/    one training run per trial (checkpoints/, run.json, config.json)
        leaderboard.csv/.md   every trial, sorted by the metric
        best.yaml             the best trial's whole training job: `python -m arplatform train
                              --config-dir <this folder> --config-name best`
    <output_root>/ray/<sweep name>/          Tune's experiment state (restored by resume=true)
    <output_root>/ray/<sweep name>-trials/   each trial's Ray Train run state
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass

import yaml

from ..core.errors import RunStateError, TrainingError
from ..core.io import save_text
from .runs import Run, latest_started, read_state, unique_name, write_state  # (a sweep's record is a run's)
from .storage import Root


@dataclass
class Sweep:
    """A sweep's names and paths (plain data: it travels to Tune trials as a dict)."""

    name: str
    dir: str  # <output_root>/tune/<name>
    ray_storage: str  # <output_root>/ray
    resumed: bool = False

    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, "sweep.json")

    @property
    def tune_path(self) -> str:
        return os.path.join(self.ray_storage, self.name)

    def trial_run(self, trial_id: str) -> Run:
        """The training run of one trial; a trial Tune restarts finds its folder and resumes it."""
        run_dir = os.path.join(self.dir, "trials", trial_id)
        run = Run(f"{self.name}-{trial_id}", self.dir, run_dir, os.path.join(self.ray_storage, f"{self.name}-trials"),
                  resumed=os.path.exists(os.path.join(run_dir, "run.json")))
        os.makedirs(run.dir, exist_ok=True)
        return run

    def to_dict(self) -> dict:
        return asdict(self)


def _sweep(root: Root, name: str, resumed: bool = False, folder: str = "tune") -> Sweep:
    return Sweep(name, root.local_path(folder, name), root.local_path("ray"), resumed)


def new_sweep(root: Root, config: str, sweep_name: str | None = None, config_name: str | None = None,
              folder: str = "tune") -> Sweep:
    """A fresh sweep folder under <output_root>/<folder>/, claimed with mkdir; its name is unique
    unless given. `root`: the output root, as `runs.new_run` takes it."""
    name = sweep_name or unique_name(config)
    sweep = _sweep(root, name, folder=folder)
    os.makedirs(os.path.dirname(sweep.dir), exist_ok=True)
    try:
        if os.path.exists(sweep.tune_path):
            raise FileExistsError
        os.mkdir(sweep.dir)
    except FileExistsError:
        raise RunStateError(f"{sweep.dir}: sweep {name!r} exists; pass resume=true to continue it, "
                            "or another sweep_name") from None
    write_state(sweep, sweep_name=name, sweep_config=config, config_name=config_name, status="RUNNING",
                started_at=time.time(),
                pid=os.getpid())
    return sweep


def find_sweep(root: Root, config: str, sweep_name: str | None = None) -> Sweep:
    """The sweep `sweep_name`, or the latest started sweep of `config`, to resume."""
    base = root.local_path("tune")
    names = [sweep_name] if sweep_name else sorted(os.listdir(base)) if os.path.isdir(base) else []
    found = [_sweep(root, n, resumed=True) for n in names]
    found = [s for s in found if os.path.exists(s.state_path) and read_state(s).get("sweep_config") == config]
    what = f"sweep {sweep_name!r}" if sweep_name else "no earlier sweep"
    return latest_started(found, base, f"tune config {config!r} has {what}")


# ---------------------------------------------------------------------------
# Leaderboard and best.yaml

COLUMNS = ("rank", "trial", "status", "epochs", "best_val_loss", "bits_per_token", "wall_s")


def check_a_trial_ran(errors: list, where: str) -> None:
    """A sweep whose every trial failed (`errors`: one per trial, None where it ran) ends in
    one line naming the first failure, not in a leaderboard of failures and exit 0."""
    if errors and all(e is not None for e in errors):
        first = " ".join(str(errors[0]).split())[:300]
        raise TrainingError(f"every trial of the sweep failed ({where}); the first: {first}")


def sort_rows(rows: list[dict], metric: str = "best_val_loss") -> list[dict]:
    """Lowest `metric` first; trials without one last."""
    def key(r):
        loss = r.get(metric)
        return (loss is None or not math.isfinite(loss), loss if loss is not None else 0.0, r["trial"])

    rows = sorted(rows, key=key)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "nan"
    return "null" if value is None else str(value)


def write_leaderboard(sweep: Sweep, rows: list[dict], param_keys: list[str], metric_columns=COLUMNS[3:]) -> list[str]:
    """leaderboard.csv and leaderboard.md, each written whole or not at all."""
    columns = [*COLUMNS[:3], *param_keys, *metric_columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    table += "".join("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |\n" for r in rows)
    paths = []
    for name, text in (("leaderboard.csv", buf.getvalue()), ("leaderboard.md", table)):
        paths.append(save_text(os.path.join(sweep.dir, name), text))
    return paths


def write_best_yaml(sweep: Sweep, job: dict, trial: dict) -> str:
    """The best trial's whole training job as a config `arplatform train` takes unchanged."""
    job = dict(job, run_name=None, resume=False)
    header = (f"# Best trial {trial['trial']} of sweep {sweep.name}: best val/loss {trial['best_val_loss']:.4f}.\n"
              f"# Train it: python -m arplatform train --config-dir {sweep.dir} --config-name best\n")
    return save_text(os.path.join(sweep.dir, "best.yaml"), header + yaml.safe_dump(job, sort_keys=False))
