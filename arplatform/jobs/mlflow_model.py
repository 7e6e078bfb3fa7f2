"""A training run's model in MLflow: its checkpoint with the codebook and VAE it decodes
through, as one MLflow model that `mlflow.pyfunc.load_model` turns into an image sampler.

    log_model(uri, run_id, files, sample, register_as)   after a training run; → models:/m-<id>, runs:/…
    fetch_model("models:/<name>/<version>" | "models:/m-<id>" | "runs:/<run_id>/model", tracking_uri)
                                                         → the three files, downloaded, for generate
    ImageModel                                           the pyfunc: rows of (class, seed, n) → images

The pyfunc is a "model from code" (nothing pickled; weights read with `weights_only=True`).
`generate` never loads it: it downloads the files and checks them like any path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings

import mlflow.pyfunc
import numpy as np

from ..distributed.cluster import environment
from ..tracking import mlflow_runs

MODEL_DIR = "model"  # the artifact folder of a run that holds the model: runs:/<run_id>/model
FILES = ("transformer_ckpt", "codebook_pt", "vae_ckpt")
_FETCHED: dict[str, dict] = {}  # this process's downloads: generate reads one model twice (settings, models)
QUIET_DOWNLOADS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # MLflow's bar would precede the platform's line
SCRIPT = ("import mlflow.models\n"
          "from arplatform.jobs.mlflow_model import ImageModel\n"
          "mlflow.models.set_model(ImageModel())\n")


def signature():
    """Rows of (class, seed, n) in; (N, H, W, C) uint8 images out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("long", "class"), ColSpec("long", "seed"), ColSpec("long", "n")]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1), "images")]))


def log_model(uri: str, run_id: str, files: dict, sample: dict, register_as: str | None = None) -> dict:
    """An MLflow 3 logged model of the run (`models:/m-<id>`): the three files with their SHA-256s,
    the signature, the sampling settings, the last validation metrics; registered as
    `register_as` when given. Client API only (`mlflow.pyfunc.log_model` sets global URIs)."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model

    from ..outputs import storage

    client = mlflow_runs.client(uri)
    step = last_validation_step(client, run_id)
    model = client.create_logged_model(  # in the run's own experiment (MLflow's default would be "0")
        client.get_run(run_id).info.experiment_id, name=MODEL_DIR, source_run_id=run_id, model_type="image-sampler",
        params={k: str(v) for k, v in sample.items()})
    with tempfile.TemporaryDirectory() as tmp, environment(QUIET_DOWNLOADS), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided")  # the signature says it all
        script = os.path.join(tmp, "arplatform_model.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(SCRIPT)
        folder = os.path.join(tmp, MODEL_DIR)
        digests = {k: storage.Location(files[k]).sha256() for k in FILES}
        mlflow.pyfunc.save_model(
            path=folder, python_model=script, artifacts={k: files[k] for k in FILES}, signature=signature(),
            model_config={"sample": sample, "sha256": digests},
            pip_requirements=["arplatform", "torch", "numpy", "pandas"],
            mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                               model_id=model.model_id))
        client.log_model_artifacts(model.model_id, folder)
    client.log_outputs(run_id, models=[LoggedModelOutput(model.model_id, step=step)])
    final = [m for key in client.get_run(run_id).data.metrics for m in client.get_metric_history(run_id, key)
             if m.step == step]
    client.log_batch(run_id, metrics=[Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id)
                                      for m in final])  # the model's metrics: the run's at its last val step
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    logged = {"model_id": model.model_id, "model_uri": f"models:/{model.model_id}",
              "run_uri": f"runs:/{run_id}/{MODEL_DIR}"}
    if register_as:
        logged["registered_uri"] = register(client, register_as, model.model_id, run_id)
    return logged


def log_training_model(job, best: str, codebook: str, uri: str, run_id: str) -> dict:
    """A run's best.pt with its codebook and VAE as the run's model; its URIs, or why there is none."""
    from ..outputs import storage
    from ..outputs.publish import codebook_vae_path
    from .sampling import checkpoint_sampling

    vae = codebook_vae_path(codebook)
    if not vae or not storage.Location(vae).isfile():
        return {"skipped": f"{codebook} names no VAE here: no images to decode into"}
    files = {"transformer_ckpt": best, "codebook_pt": storage.Location(codebook).fetch(),
             "vae_ckpt": storage.Location(vae).fetch()}
    name = (job.tracking.model_name or f"arplatform-{job.name}") if job.tracking.register else None
    return log_model(uri, run_id, files, checkpoint_sampling(best), name)  # what generate draws it with


def register(client, name: str, model_id: str, run_id: str) -> str:
    """A new version of registered model `name` (made on first use) for a logged model; its URI."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # an embedded store resolves a models:/m-<id> source through the process's tracking URI, not
    # the client's (MLflow 3.17's sqlalchemy registry): that URI is the client's for the call
    uri = client.tracking_uri
    with environment({"MLFLOW_TRACKING_URI": uri}, remove=("MLFLOW_TRACKING_URI",)):
        version = client.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id)
    return f"models:/{name}/{version.version}"


def last_validation_step(client, run_id: str) -> int:
    """The step of the run's last validation metrics (0 before any): MLflow links the run's
    metrics of that step to the model."""
    history = client.get_metric_history(run_id, "val/loss")
    return max((m.step for m in history), default=0)


def fetch_model(model_uri: str, tracking_uri: str) -> dict:
    """An MLflow model's checkpoint, codebook and VAE, downloaded into the cache (keyed by store
    and resolved source: never a stale copy) and checked against the recorded SHA-256s, and the
    sampling settings it was logged with (key "sample")."""
    import mlflow.artifacts
    import yaml

    from ..config import SAMPLING_KEYS
    from ..core.errors import CheckpointError
    from ..core.precision import cache_dir
    from ..tracking.mlflow_runs import probe_server

    probe_server(tracking_uri)  # seconds, not MLflow's minutes of retries, when nothing answers
    try:
        source = model_source(model_uri, tracking_uri)
    except Exception as e:  # noqa: BLE001 - any failure: the URI names no model here
        raise CheckpointError(f"{model_uri}: not a model the platform logged, in the store {tracking_uri} "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    key = hashlib.sha256(f"{tracking_uri}|{source}".encode()).hexdigest()[:16]
    folder = os.path.join(cache_dir(), "mlflow-models", key)
    kept = os.path.join(folder, "fetched.json")
    if folder in _FETCHED and all(os.path.exists(_FETCHED[folder][k]) for k in FILES):
        return _FETCHED[folder]
    if os.path.exists(kept):  # these files of that run were downloaded and checked before
        with open(kept, encoding="utf-8") as f:
            _FETCHED[folder] = fetched(folder, json.load(f))
        return _FETCHED[folder]
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=os.path.dirname(folder))
    try:
        with environment(QUIET_DOWNLOADS):
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
        with open(os.path.join(local, "MLmodel"), encoding="utf-8") as f:
            flavor = yaml.safe_load(f)["flavors"]["python_function"]
        artifacts, config = flavor["artifacts"], flavor.get("config") or {}
        record = {"files": {k: os.path.relpath(os.path.join(local, artifacts[k]["path"]), tmp) for k in FILES},
                  "sample": {k: v for k, v in (config.get("sample") or {}).items() if k in SAMPLING_KEYS}}
        check_digests(model_uri, {k: os.path.join(tmp, rel) for k, rel in record["files"].items()},
                      config.get("sha256"))
        with open(os.path.join(tmp, "fetched.json"), "w", encoding="utf-8") as f:
            json.dump(record, f)
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # noqa: BLE001 - any failure: the URI names no model of this platform here
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{model_uri}: not a model the platform logged, in the store {tracking_uri} "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    _FETCHED[folder] = fetched(folder, record)
    return _FETCHED[folder]


def fetched(folder: str, record: dict) -> dict:
    """{transformer_ckpt, codebook_pt, vae_ckpt: local paths, sample: the settings logged with them}."""
    return {k: os.path.join(folder, rel) for k, rel in record["files"].items()} | {"sample": record["sample"]}


def check_digests(model_uri: str, files: dict, recorded: dict | None) -> None:
    """Each downloaded file against the SHA-256 the model recorded: a changed file is refused."""
    from ..core.errors import CheckpointError
    from ..outputs import storage

    for key, path in files.items():
        expected = (recorded or {}).get(key)
        found = storage.Location(path).sha256() if expected else None
        if found != expected:
            raise CheckpointError(f"{model_uri}: its {os.path.basename(path)} changed since the model was logged "
                                  f"(SHA-256 {found[:12]}…, the model records {expected[:12]}…); "
                                  "refusing to draw from it")


def model_source(model_uri: str, tracking_uri: str) -> str:
    """Where a model's files are (runs:/<run_id>/model, models:/m-<id>, models:/<name>/<n>|@<alias>|
    /latest), through the store `tracking_uri`, not MLflow's process-wide registry URI."""
    client = mlflow_runs.client(tracking_uri)
    if model_uri.startswith("runs:/"):
        return run_model_source(client, model_uri)
    name, _, ref = model_uri[len("models:/"):].partition("/")
    if name.startswith("m-") and not ref:
        return client.get_logged_model(name).artifact_location
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif ref == "latest":
        version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    else:
        version = client.get_model_version(name, ref).version
    source = client.get_model_version_download_uri(name, version)
    if source.startswith("models:/m-"):  # a version of a logged model
        return client.get_logged_model(source[len("models:/"):].split("/")[0]).artifact_location
    return source


def run_model_source(client, model_uri: str) -> str:
    """runs:/<run_id>/<name>: the run's newest logged model of that name, else its `<name>`
    artifacts (MLflow 3.17's own runs:/ resolution fails against a tracking server)."""
    run_id, _, name = model_uri[len("runs:/"):].partition("/")
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}], max_results=1)
    return models[0].artifact_location if models else f"{run.info.artifact_uri}/{name}"


class ImageModel(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc.load_model(uri).predict(rows)`: rows (class (-1: none), seed, n) → (Σn, H,
    W, C) uint8: the images `generate --seed <seed>` draws for indices 0…n-1 with that class."""

    def load_context(self, context) -> None:
        from ..config import SampleConfig, from_dict, to_dict
        from ..distributed.image_sampler import ImageSampler

        sample = to_dict(from_dict(SampleConfig, (context.model_config or {}).get("sample", {})))
        spec = {k: context.artifacts[k] for k in FILES} | {"out": None, "seed": 0, "sample": sample,
                                                           "device": "auto", "threads": None}
        self.sampler = ImageSampler(spec)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        drawn = []
        for row in model_input.to_dict("records"):
            n = int(row["n"])
            labels = np.full(n, int(row["class"]), dtype=np.int64)
            drawn.append(self.sampler.draw(np.arange(n, dtype=np.int64), labels, int(row["seed"]))[1])
        return np.concatenate(drawn) if drawn else np.zeros((0, 0, 0, 0), dtype=np.uint8)
