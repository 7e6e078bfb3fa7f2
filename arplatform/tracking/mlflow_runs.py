"""MLflow tracking through the client API (no global active run: the driver and rank 0 log to
one run). Default store: `<output_root>/mlflow.db`, artifacts in `<output_root>/mlartifacts`;
`tracking.tracking_uri` or $MLFLOW_TRACKING_URI name a server instead."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager

from ..config import flatten
from ..core.errors import Interrupted

QUIET_LOGGERS = ("mlflow", "alembic", "sqlalchemy")
_ready: set[str] = set()  # stores this process has created or checked


def is_model_uri(path) -> bool:
    """An MLflow model URI (`models:/<name>/<version>`, `runs:/<run_id>/model`), not a path."""
    return isinstance(path, str) and path.startswith(("models:/", "runs:/"))


def tracking_uri(configured: str | None, output_root: str) -> str:
    """The MLflow store: configured, else $MLFLOW_TRACKING_URI, else sqlite in a local
    `output_root`; a URI root has no default (every worker must reach one store)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from ..outputs.storage import Location

    if Location(output_root).remote:
        from ..core.errors import ConfigError

        raise ConfigError(f"tracking.tracking_uri: output_root is {output_root}, and a sqlite file cannot live "
                          "there; set tracking.tracking_uri or MLFLOW_TRACKING_URI (an mlflow server every node "
                          "reaches, docs/cluster.md) or tracking.enabled=false")
    return f"sqlite:///{os.path.abspath(os.path.join(output_root, 'mlflow.db'))}"


@contextmanager
def store_lock(uri: str):
    """An exclusive lock beside an embedded sqlite store: two processes creating its tables,
    or the same experiment, at once would otherwise fail ("table … already exists")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = uri[len("sqlite:///"):]
    os.makedirs(os.path.dirname(db) or ".", exist_ok=True)
    with FileLock(db + ".lock", timeout=300):
        yield


def client(uri: str):
    from mlflow.tracking import MlflowClient

    for name in QUIET_LOGGERS:  # "Creating initial MLflow database tables…"; after import, which resets it
        logging.getLogger(name).setLevel(logging.WARNING)
    if uri in _ready:
        return MlflowClient(tracking_uri=uri)
    probe_server(uri)
    with store_lock(uri):  # the first client of a store creates or migrates its tables (MLflow's own migrations)
        c = MlflowClient(tracking_uri=uri)
        c.search_experiments(max_results=1)
    _ready.add(uri)
    return c


def probe_server(uri: str, timeout_s: float = 5.0) -> None:
    """One request with a short timeout before any MLflow call: MLflow's client retries an
    unreachable server for minutes, silently. Any HTTP answer means a server is there."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered (a proxy's 401, an older server's 404)
    except (urllib.error.URLError, OSError) as e:
        from ..core.errors import StorageError

        reason = getattr(e, "reason", e)
        raise StorageError(f"{uri}: the MLflow tracking server does not answer ({reason}); start it, or name "
                           "another tracking_uri") from None


# MLflow 3's UI opens an experiment in its model-training view (runs, models, charts) when the
# experiment says so, rather than the GenAI view (traces, judges, prompts)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(c, name: str, artifacts: str) -> str:
    """The experiment `name`, created on first use as a model-training experiment; a sqlite
    store's artifacts go to the local folder `artifacts` (`<output_root>/mlartifacts`)."""
    with store_lock(c.tracking_uri):  # two first runs must not both create the experiment
        exp = c.get_experiment_by_name(name)
        if exp is None:
            sqlite = c.tracking_uri.startswith("sqlite:")  # else MLflow would scatter ./mlruns in the cwd
            return c.create_experiment(name, artifact_location="file://" + artifacts if sqlite else None,
                                       tags=EXPERIMENT_TAGS)
        for key, value in EXPERIMENT_TAGS.items():  # an experiment made by an older platform
            if exp.tags.get(key) != value:
                c.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id


def start_run(uri: str, experiment: str, artifacts: str, run_name: str, params: dict, tags: dict) -> str:
    """A new run with the platform's source tags (`source_tags`) beside `tags`."""
    c = client(uri)
    run = c.create_run(experiment_id(c, experiment, artifacts), run_name=run_name, tags=source_tags() | tags)
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def source_tags() -> dict:
    """What made a run, as MLflow's UI shows it ("Source", the git commit): the platform's command
    and version, and the commit of its source tree where it runs from a git checkout."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        platform_version = version("arplatform")
    except PackageNotFoundError:  # run from a source tree that is not installed
        platform_version = "unknown"
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": command_name(sys.argv),
            "arplatform.version": platform_version}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def command_name(argv: list[str]) -> str:
    """`arplatform train` for `arplatform train …`, `python -m arplatform train …` and
    `python -m arplatform.cli.train …`; the program's name for anything else (a test, a notebook)."""
    prog = os.path.basename(argv[0]).removesuffix(".py") if argv and argv[0] else "python"
    if prog in ("arplatform", "__main__") and len(argv) > 1 and not argv[1].startswith("-"):
        return f"arplatform {argv[1]}"
    parent = os.path.basename(os.path.dirname(argv[0])) if argv and argv[0] else ""
    return f"arplatform {prog.replace('_', '-')}" if parent == "cli" else prog


def git_commit() -> str | None:
    """The commit of the platform's source tree when it runs from a git checkout (an editable
    install); None for an installed wheel, or where git is missing."""
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(here, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def log_dataset(uri: str, run_id: str, name: str, digest: str, source: str, context: str = "training",
                profile: dict | None = None) -> None:
    """A dataset input of the run, as MLflow's UI lists it ("Datasets"): its name, its digest (the
    platform's identity of the data) and its source (a path relative to the output root, or a URI)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    source_type = source.split("://", 1)[0] if "://" in source else "local"
    dataset = Dataset(name=name, digest=digest, source_type=source_type, source=json.dumps({"uri": source}),
                      profile=json.dumps(profile) if profile else None)
    client(uri).log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])


def run_page(uri: str, run_id: str) -> str:
    """Where MLflow's UI shows a run, in its model-training view: on the tracking server, or on
    `mlflow server --host 127.0.0.1` (port 5000) over an embedded store."""
    c = client(uri)
    server = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{server}/#/experiments/{c.get_run(run_id).info.experiment_id}/runs/{run_id}?workflowType=machine_learning"


def log_params(uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    c = client(uri)
    for i in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=flat[i : i + 100])


class MetricsLogger:
    """The training loop's metrics callback: logs a dict of floats at a step."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self._client = None

    def __call__(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            self._client = client(self.uri)
        now = int(time.time() * 1000)
        self._client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items() if k != "epoch"]
        )


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status=status)


def set_status(uri: str, run_id: str, status: str) -> None:
    client(uri).update_run(run_id, status=status)


def log_artifact(uri: str, run_id: str, path: str, artifact_path: str | None = None) -> None:
    client(uri).log_artifact(run_id, path, artifact_path)


def log_image(uri: str, run_id: str, png: str, key: str, step: int = 0) -> None:
    """A picture MLflow's chart view shows per run and step ("Image grid": two runs side by side)."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        client(uri).log_image(run_id, np.asarray(image.convert("RGB")), key=key, step=step)


def log_metrics(uri: str, run_id: str, metrics: dict, step: int = 0) -> None:
    MetricsLogger(uri, run_id)(metrics, step)


def set_tag(uri: str, run_id: str, key: str, value: str) -> None:
    client(uri).set_tag(run_id, key, value)


@contextmanager
def tracked_run(uri: str | None, run_id: str | None, start, on_start, on_end, ends_itself: bool = True):
    """An MLflow run and a state file ending FINISHED, FAILED or KILLED whatever stops the block;
    `start()` makes the run (a resumed one RUNNING again), `on_start`/`on_end` write the state.
    Yields the run id. `ends_itself` false (a trial): the sweep's driver ends them instead."""
    status = "FAILED"
    try:
        if uri and not run_id:
            run_id = start()
        elif uri:
            set_status(uri, run_id, "RUNNING")
        on_start(run_id)
        yield run_id
        status = "FINISHED"
    except (KeyboardInterrupt, Interrupted):
        status = "KILLED"
        raise
    finally:
        if ends_itself:
            on_end(status)
            if uri and run_id:
                finish_run(uri, run_id, status)
