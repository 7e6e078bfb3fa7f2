"""One folder per training run, and the seed's path that names the latest finished one.

    <output_root>/transformer/<config>/
        runs/<run name>/           everything one run writes: checkpoints/{best,last}.pt,
                                   run.json (state, Ray + MLflow ids), config.json,
                                   summary.json, samples_codes.npy, samples_grid.png
        checkpoints/best.pt        the seed's path: a copy of the best.pt of the latest run
                                   that *finished*, replaced atomically when a run finishes
        checkpoints/published.json which run that best.pt came from

A run writes only inside its own folder; the seed's path changes by one rename after a run
finished. Ray's state is in `<output_root>/ray/<run name>/`. A URI root's folders are built in
the local mirror and pushed (`push_run`).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..core.errors import RunStateError
from ..core.io import atomic_write, read_json_object, save_json
from . import storage

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


@dataclass
class Run:
    """A training run's names and paths (plain data: it travels to Ray workers as a dict)."""

    name: str
    config_dir: str  # <output_root>/transformer/<config> (in the local mirror of a URI root)
    dir: str  # <config_dir>/runs/<name>
    ray_storage: str  # <output_root>/ray (a URI when the root is one)
    resumed: bool = False

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.dir, "checkpoints")

    @property
    def ray_path(self) -> str:
        return storage.Location(self.ray_storage).file(self.name)

    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, "run.json")

    def to_dict(self) -> dict:
        return asdict(self)


def config_dir(root: storage.Root, config: str) -> str:
    return root.local_path("transformer", config)


def seed_checkpoint(root: storage.Root, config: str) -> str:
    """The seed's path, `<output_root>/transformer/<config>/checkpoints/best.pt`: the best checkpoint
    of the config's latest finished run (`publish_best`); a URI for a bucket root."""
    return root.file(f"transformer/{config}/checkpoints/best.pt")


# -- the record of a run or a sweep: one JSON file (run.json, sweep.json) with its state ----------

def read_state(record: Run) -> dict:
    """The state file of a run (or of a sweep: anything with a `state_path`)."""
    return read_json_object(record.state_path, RunStateError)


def write_state(record: Run, **fields) -> dict:
    """Merge `fields` into the state file (atomically)."""
    state = read_state(record) if os.path.exists(record.state_path) else {}
    state.update(fields, updated_at=time.time())
    save_json(record.state_path, state)
    return state


def note_tokenizer(run: Run, identity: dict) -> None:
    """The codebook and VAE a run trains with, in its run.json, and the run's pin in the
    tokenizer version they live in: no later tokenize prunes that version, wherever it is."""
    from .publish import pin_version

    write_state(run, **identity)
    pin_version(identity.get("codebook_pt"), run.state_path)


def unique_name(config: str) -> str:
    return f"{config}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def latest_started(found: list, where: str, what: str):
    """The record to resume: the latest started of `found`; none is one line naming `where`."""
    if not found:
        raise RunStateError(f"{where}: resume=true but {what} (start one without resume=true)")
    return max(found, key=lambda r: (read_state(r).get("started_at", 0), r.name))


def new_run(root: storage.Root, config: str, run_name: str | None = None) -> Run:
    """Create a fresh run folder; its name is unique (`<config>-<time>-<random>`) unless given."""
    base = config_dir(root, config)
    name = run_name or unique_name(config)
    run = Run(name, base, os.path.join(base, "runs", name), root.file("ray"))
    if root.exists(f"ray/{name}"):
        raise RunStateError(f"{run.ray_path}: run {name!r} exists; pass resume=true to continue it, "
                            "or another run_name")
    os.makedirs(os.path.dirname(run.dir), exist_ok=True)
    try:
        os.mkdir(run.dir)  # the claim: exactly one process creates a run folder
    except FileExistsError:
        raise RunStateError(f"{run.dir}: run {name!r} exists; pass resume=true to continue it, "
                            "or another run_name") from None
    write_state(run, run_name=name, status=RUNNING, started_at=time.time(), pid=os.getpid())
    return run


def find_run(root: storage.Root, config: str, run_name: str | None = None) -> Run:
    """The run `run_name`, or the latest started run of `config`, to resume."""
    root.pull("transformer", config, "runs")  # a fresh machine resumes a cluster's run
    base = config_dir(root, config)
    runs_dir = os.path.join(base, "runs")
    names = [run_name] if run_name else sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    found = [Run(n, base, os.path.join(runs_dir, n), root.file("ray"), resumed=True) for n in names]
    found = [r for r in found if os.path.exists(r.state_path)]
    what = f"run {run_name!r}" if run_name else "no earlier run"
    return latest_started(found, runs_dir, f"config {config!r} has {what}")


@contextmanager
def held(run: Run):
    """The run's driver lock for the block: a second driver resuming a live run is refused."""
    from filelock import FileLock, Timeout

    lock = FileLock(os.path.join(run.dir, ".driver.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunStateError(f"{run.dir}: another driver is training run {run.name!r} now; wait for it to end "
                            "(or stop it) before resume=true") from None
    try:
        yield run
    finally:
        lock.release()


def publish_best(run: Run, root: storage.Root) -> str:
    """The run's best.pt to the seed's path `<config>/checkpoints/best.pt` in one rename: readers
    see the previous finished run's file or this one, never a partial copy."""
    target = os.path.join(run.config_dir, "checkpoints", "best.pt")
    atomic_write(target, lambda tmp: shutil.copyfile(os.path.join(run.checkpoint_dir, "best.pt"), tmp))
    run_dir = root.public(run.dir)  # the root's name for it: a URI for a bucket
    save_json(os.path.join(run.config_dir, "checkpoints", "published.json"),
              {"run_name": run.name, "run_dir": run_dir, "published_at": time.time()})
    return target


def push_run(run: Run, root: storage.Root, published: bool = False) -> None:
    """With a URI root: the run's folder (and the seed's path) to the root; nothing for a local root."""
    root.push(run.dir)
    if published:
        root.push(os.path.join(run.config_dir, "checkpoints"))
