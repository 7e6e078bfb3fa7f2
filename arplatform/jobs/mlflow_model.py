"""A training run's model in MLflow: its checkpoint with the codebook and VAE it decodes
through, as one MLflow model that `mlflow.pyfunc.load_model` turns into an image sampler.

    log_model(uri, run_id, files, sample, register_as)   after a training run; → runs:/…, models:/…
    fetch_model("models:/<name>/<version>" | "runs:/<run_id>/model", tracking_uri)
                                                         → the three files, downloaded, for generate
    ImageModel                                           the pyfunc: rows of (class, seed, n) → images

The pyfunc is a "model from code": MLflow runs a three-line script that imports
`ImageModel` from here, so nothing is pickled, and every weight file is read with
`weights_only=True` by the platform's own loaders. `generate` never loads the pyfunc: it
downloads the files and checks them like any path (shapes, the codebook and VAE the
checkpoint trained with).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

import mlflow.pyfunc
import numpy as np

from .. import tracking

MODEL_DIR = "model"  # the artifact folder of a run that holds the model: runs:/<run_id>/model
FILES = ("transformer_ckpt", "codebook_pt", "vae_ckpt")
_FETCHED: dict[str, dict] = {}  # this process's downloads: generate reads one model twice (settings, models)
SCRIPT = ("import mlflow.models\n"
          "from arplatform.jobs.mlflow_model import ImageModel\n"
          "mlflow.models.set_model(ImageModel())\n")


def save_model_folder(folder: str, files: dict, sample: dict) -> None:
    """The MLflow model folder: MLmodel, the script, the three files under artifacts/, and their
    SHA-256s in the model's config (what a download is checked against)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from .. import storage

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "class"), ColSpec("long", "seed"), ColSpec("long", "n")]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1), "images")]))  # (N, H, W, C)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "arplatform_model.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(SCRIPT)
        digests = {k: storage.sha256(files[k]) for k in FILES}
        mlflow.pyfunc.save_model(path=folder, python_model=script, artifacts={k: files[k] for k in FILES},
                                 signature=signature, model_config={"sample": sample, "sha256": digests},
                                 pip_requirements=["arplatform", "torch", "numpy", "pandas"])


def log_model(uri: str, run_id: str, files: dict, sample: dict, register_as: str | None = None) -> dict:
    """The model under the run's `model/` artifacts; registered as a new version of
    `register_as` when given. Returns its URIs."""
    client = tracking.client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, MODEL_DIR)
        save_model_folder(folder, files, sample)
        client.log_artifacts(run_id, folder, MODEL_DIR)
    logged = {"model_uri": f"runs:/{run_id}/{MODEL_DIR}"}
    if register_as:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(register_as)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_DIR}"
        version = client.create_model_version(register_as, source, run_id=run_id)
        logged["registered_uri"] = f"models:/{register_as}/{version.version}"
    return logged


def fetch_model(model_uri: str, tracking_uri: str) -> dict:
    """The checkpoint, codebook and VAE of an MLflow model (`model_source`), downloaded into this
    machine's cache and checked against the SHA-256s the model records. The cache is keyed by the
    store and the files' resolved source (which names the run that logged them), so a recreated
    store or a re-registered name is a new download, never a stale copy."""
    import mlflow.artifacts
    import yaml

    from ..core.precision import cache_dir
    from ..errors import CheckpointError
    from ..tracking import probe_server

    probe_server(tracking_uri)  # seconds, not MLflow's minutes of retries, when nothing answers
    try:
        source = model_source(model_uri, tracking_uri)
    except Exception as e:  # noqa: BLE001 - any failure: the URI names no model here
        raise CheckpointError(f"{model_uri}: not a model the platform logged, in the store {tracking_uri} "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    key = hashlib.sha256(f"{tracking_uri}|{source}".encode()).hexdigest()[:16]
    folder = os.path.join(cache_dir(), "mlflow-models", key)
    kept = os.path.join(folder, "files.json")
    if key in _FETCHED and all(os.path.exists(f) for f in _FETCHED[key].values()):
        return _FETCHED[key]
    if os.path.exists(kept):  # these files of that run were downloaded and checked before
        with open(kept, encoding="utf-8") as f:
            return {k: os.path.join(folder, rel) for k, rel in json.load(f).items()}
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=os.path.dirname(folder))
    try:
        with quiet_downloads():  # MLflow's own progress bar would come before the platform's one line
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
        with open(os.path.join(local, "MLmodel"), encoding="utf-8") as f:
            flavor = yaml.safe_load(f)["flavors"]["python_function"]
        artifacts = flavor["artifacts"]
        files = {k: os.path.relpath(os.path.join(local, artifacts[k]["path"]), tmp) for k in FILES}
        check_digests(model_uri, {k: os.path.join(tmp, rel) for k, rel in files.items()},
                      (flavor.get("config") or {}).get("sha256"))
        with open(os.path.join(tmp, "files.json"), "w", encoding="utf-8") as f:
            json.dump(files, f)
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # noqa: BLE001 - any failure: the URI names no model of this platform here
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{model_uri}: not a model the platform logged, in the store {tracking_uri} "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    _FETCHED[key] = {k: os.path.join(folder, rel) for k, rel in files.items()}
    return _FETCHED[key]


@contextmanager
def quiet_downloads():
    """MLflow's artifact progress bar off for the block (its setting is an environment variable)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def check_digests(model_uri: str, files: dict, recorded: dict | None) -> None:
    """Each downloaded file against the SHA-256 the model recorded when it was logged: files
    changed in the artifact store since are refused, naming the file. (A model logged before
    models carried digests has none to check.)"""
    from .. import storage
    from ..errors import CheckpointError

    for key, path in files.items():
        expected = (recorded or {}).get(key)
        if expected and storage.sha256(path) != expected:
            raise CheckpointError(f"{model_uri}: its {os.path.basename(path)} changed since the model was logged "
                                  f"(SHA-256 {storage.sha256(path)[:12]}…, the model records {expected[:12]}…); "
                                  "refusing to draw from it")


def model_source(model_uri: str, tracking_uri: str) -> str:
    """Where a model's files are: a runs:/ URI as it is; a registered version (models:/<name>/<n>,
    models:/<name>@<alias>, models:/<name>/latest) through the registry of `tracking_uri`.
    (MLflow's own models:/ resolution reads the process-wide registry URI; this one does not.)"""
    if model_uri.startswith("runs:/"):
        return model_uri
    client = tracking.client(tracking_uri)
    name, _, ref = model_uri[len("models:/"):].partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif ref == "latest":
        version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    else:
        version = client.get_model_version(name, ref).version
    return client.get_model_version_download_uri(name, version)


class ImageModel(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc.load_model(uri).predict(rows)`: rows with columns class (-1: none), seed
    and n → (Σn, H, W, C) uint8 images; row r's images are samples 0…n-1 of its seed, the
    images `generate --seed <seed>` draws for those indices with that class."""

    def load_context(self, context) -> None:
        from ..config import SampleConfig, from_dict, to_dict
        from ..image_sampler import ImageSampler

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
