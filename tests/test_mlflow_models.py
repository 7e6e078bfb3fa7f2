"""Models in MLflow: a checkpoint with its codebook and VAE as one MLflow model, registered,
and `generate transformer_ckpt=models:/<name>/<version>` (or runs:/…) through MLflow's own
URI resolution, against a real `mlflow server` on loopback. (The pipeline test logs one from
a real training run into the embedded sqlite store and generates from its runs:/ URI.)"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from test_generate import generate, images, write_models

from arplatform.config import SampleConfig, to_dict
from arplatform.distributed.cluster import free_port
from arplatform.jobs.mlflow_model import log_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a port, store and artifact folder of its own, in a
    process group of its own (stopped afterwards). Yields its URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{folder}/store.db", "--artifacts-destination", str(folder / "art")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    os.environ["ARPLATFORM_TEST_MLFLOW_ART"] = str(folder / "art")  # where a test finds the stored files
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (folder / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_registered_model_generates_what_its_files_generate(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    ckpt, codebook, vae = write_models(tmp_path / "m")
    client = MlflowClient(mlflow_server)
    run_id = client.create_run(client.create_experiment("models-test")).info.run_id
    sample = to_dict(SampleConfig())
    logged = log_model(mlflow_server, run_id, {"transformer_ckpt": ckpt, "codebook_pt": codebook, "vae_ckpt": vae},
                       sample, register_as="tiny")
    model_id = logged["model_id"]
    assert logged == {"model_id": model_id, "model_uri": f"models:/{model_id}", "run_uri": f"runs:/{run_id}/model",
                      "registered_uri": "models:/tiny/1"}
    assert log_model(mlflow_server, run_id, {"transformer_ckpt": ckpt, "codebook_pt": codebook, "vae_ckpt": vae},
                     sample, register_as="tiny")["registered_uri"] == "models:/tiny/2"  # a new version

    assert generate("--transformer_ckpt", ckpt, "--num_samples", 6, "--out", tmp_path / "path")[0] == 0
    for uri, out in (("models:/tiny/1", "registered"), (f"runs:/{run_id}/model", "run"),
                     (f"models:/{model_id}", "logged")):
        code, log, err = generate(f"transformer_ckpt={uri}", f"tracking_uri={mlflow_server}", "num_samples=6",
                                  f"out={tmp_path / out}")
        assert code == 0, err
        assert np.array_equal(images(tmp_path / out)[0], images(tmp_path / "path")[0])
        manifest = json.loads((tmp_path / out / "manifest.json").read_text())
        assert manifest["model_uri"] == uri
        assert manifest["checkpoint_sha256"] == json.loads((tmp_path / "path" / "manifest.json").read_text())[
            "checkpoint_sha256"]  # the same bytes, checked like a path

    code, _, err = generate("transformer_ckpt=models:/nothing/1", f"tracking_uri={mlflow_server}",
                            f"out={tmp_path / 'x'}")
    assert code == 2 and err.startswith("error: models:/nothing/1: not a model the platform logged")
    assert err.count("\n") == 1 and not (tmp_path / "x").exists()

    # the pyfunc: rows of (class, seed, n) → the images generate draws for those classes and seed
    import mlflow.pyfunc
    import pandas as pd

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = mlflow.pyfunc.load_model("models:/tiny/1")
    drawn = model.predict(pd.DataFrame({"class": [2], "seed": [0], "n": [4]}))
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 4, "--classes", 2, "--out", tmp_path / "c2")[0] == 0
    expected = images(tmp_path / "c2")[0]  # (N, H, W): samples.npz keeps grey images without their channel
    assert drawn.dtype == np.uint8 and drawn.shape == (*expected.shape, 1)
    assert np.array_equal(drawn[..., 0], expected)


def test_a_reregistered_version_and_a_changed_artifact_are_never_drawn_from_stale(mlflow_server, tmp_path,
                                                                                  monkeypatch):
    """models:/<name>/1 registered again from another run draws the new run's files, not a cached
    copy of the old (N7); a model file changed in the artifact store since it was logged is
    refused against the digest the model records (N8)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("ARPLATFORM_CACHE_DIR", str(tmp_path / "cache"))
    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment("stale-test")
    sample = to_dict(SampleConfig())
    shas = []
    for seed in (0, 1):
        ckpt, codebook, vae = write_models(tmp_path / f"m{seed}", seed=seed)
        run_id = client.create_run(experiment).info.run_id
        if seed:
            client.delete_registered_model("again")
        model_id = log_model(mlflow_server, run_id, {"transformer_ckpt": ckpt, "codebook_pt": codebook,
                                                     "vae_ckpt": vae}, sample, register_as="again")["model_id"]
        code, _, err = generate("transformer_ckpt=models:/again/1", f"tracking_uri={mlflow_server}", "num_samples=2",
                                f"out={tmp_path / f'drawn{seed}'}")
        assert code == 0, err
        shas.append(json.loads((tmp_path / f"drawn{seed}" / "manifest.json").read_text())["checkpoint_sha256"])
        from arplatform.core.io import file_sha256 as sha256

        assert shas[-1] == sha256(ckpt)
    assert shas[0] != shas[1]

    # the last run's best.pt replaced inside the artifact store: refused on download
    artifact_uri = client.get_run(run_id).info.artifact_uri
    (stored,) = [os.path.join(d, "best.pt") for d, _, files in os.walk(os.environ["ARPLATFORM_TEST_MLFLOW_ART"])
                 if "best.pt" in files and model_id in d and os.path.basename(d) != "1"]  # (1/best.pt: a VAE so named)
    with open(os.path.join(tmp_path / "m0", "best.pt"), "rb") as src, open(stored, "wb") as dst:
        dst.write(src.read())
    monkeypatch.setenv("ARPLATFORM_CACHE_DIR", str(tmp_path / "fresh-cache"))
    code, _, err = generate(f"transformer_ckpt=runs:/{run_id}/model", f"tracking_uri={mlflow_server}",
                            "num_samples=2", f"out={tmp_path / 'tampered'}")
    assert code == 2 and "best.pt changed since the model was logged" in err and err.count("\n") == 1, err
    assert artifact_uri and not (tmp_path / "tampered").exists()
