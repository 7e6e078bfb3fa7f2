"""The tokenizer stage end to end on a small real dataset, and its error paths."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from arplatform.cli import compose
from arplatform.config import ConfigError, TokenizerConfig, from_dict
from arplatform.core.codebook import load_codebook_file
from arplatform.core.decode import decode_codes_to_images
from arplatform.core.errors import CheckpointError, DataError
from arplatform.core.metrics import psnr
from arplatform.core.vae import load_vae
from arplatform.imagedata import load_images
from arplatform.stages.tokenize import run_tokenize

SMALL = ["data.limit=600", "vae.epochs=15", "vae.batch_size=32", "vae.channels=32", "vae.warmup_steps=10",
         "codebook.num_codes=32", "shards=3"]


def small_config(root, *extra):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", [*SMALL, f"output_root={root}", *extra]))


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    result = run_tokenize(small_config(root), log=lambda *a: None)
    return root, result


def test_outputs_and_formats(tokenized):
    root, result = tokenized
    out = root / "codebook" / "mnist_sample"
    codes = np.load(out / "codes.npy", allow_pickle=False)
    labels = np.load(out / "labels.npy", allow_pickle=False)
    assert codes.dtype == np.int32 and codes.shape == (540, 49) and labels.shape == (540,)
    assert codes.min() >= 0 and codes.max() < 32
    assert np.load(out / "val_codes.npy").shape == (60, 49)
    shards = sorted(f for f in os.listdir(out / "shards") if f.startswith("codes-"))
    assert shards == ["codes-00000.npy", "codes-00001.npy", "codes-00002.npy"]
    assert np.array_equal(np.concatenate([np.load(out / "shards" / s) for s in shards]), codes)
    cb = load_codebook_file(out / "codebook.pt")
    assert cb["z_medoid"].shape == (32, 8) and cb["config"]["grid"] == [7, 7]
    split = json.loads((out / "split.json").read_text())
    assert split["num_val"] == 60 and len(split["val_indices"]) == 60
    report = json.loads((out / "tokenizer_eval.json").read_text())
    assert report["codebook_usage"] > 0.9
    assert (root / "vae_mnist_sample" / "checkpoints" / "best.pt").exists()
    assert not [f for f in os.listdir(root) if f.startswith(".staging")]
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{root}/mlflow.db").get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["codebook.num_codes"] == "32"
    assert run.data.metrics["tokenizer/codebook_usage"] == pytest.approx(report["codebook_usage"])


def test_round_trip_image_codes_image(tokenized):
    """Held-out images → codes → images resemble the originals far better than a blank guess."""
    root, result = tokenized
    out = root / "codebook" / "mnist_sample"
    data = load_images("mnist_sample", limit=600)
    val_idx = json.loads((out / "split.json").read_text())["val_indices"]
    real = torch.from_numpy(data.images[val_idx])
    images = decode_codes_to_images(np.load(out / "val_codes.npy"), out / "codebook.pt", result["vae_checkpoint"])
    assert images.shape == (60, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    blank = psnr(real, torch.zeros_like(real))
    assert psnr(real, images) > blank + 5
    assert result["psnr_real_vs_quantised"] == pytest.approx(psnr(real, images), abs=1e-3)
    # (B, H, W) codes and a codebook tensor decode the same
    codes = np.load(out / "val_codes.npy")[:4].reshape(4, 7, 7)
    z = load_codebook_file(out / "codebook.pt")["z_medoid"]
    assert torch.allclose(decode_codes_to_images(codes, z, load_vae(result["vae_checkpoint"])), images[:4])


def test_decode_refuses_bad_inputs(tokenized, tmp_path):
    root, result = tokenized
    vae = load_vae(result["vae_checkpoint"])
    good = torch.zeros(2, 49, dtype=torch.long)
    with pytest.raises(DataError, match="D=5 but the VAE's latent_dim is 8"):
        decode_codes_to_images(good, torch.randn(32, 5), vae)
    with pytest.raises(DataError, match="NaN or infinite"):
        decode_codes_to_images(good, torch.full((32, 8), float("inf")), vae)
    bad = good.clone()
    bad[1, 3] = -1
    with pytest.raises(DataError, match=r"1 invalid codes \(outside 0..31\), first at \(1, 3\)"):
        decode_codes_to_images(bad, torch.randn(32, 8), vae)
    with pytest.raises(DataError, match="36 positions"):
        decode_codes_to_images(torch.zeros(2, 36, dtype=torch.long), torch.randn(32, 8), vae)
    gpt_like = tmp_path / "not_a_vae.pt"
    torch.save({"format_version": 1, "kind": "gpt", "model_config": {}, "model_state_dict": {}}, gpt_like)
    with pytest.raises(CheckpointError, match="not_a_vae.pt: a 'gpt' checkpoint, expected a 'vae'"):
        decode_codes_to_images(good, torch.randn(32, 8), gpt_like)


def test_images_of_the_wrong_shape_leave_no_outputs(tmp_path):
    np.savez(tmp_path / "odd.npz", images=np.zeros((40, 30, 30), dtype=np.uint8), labels=np.zeros(40, dtype=np.int64))
    root = tmp_path / "out"
    cfg = small_config(root, "data.dataset=npz", f"data.data_dir={tmp_path / 'odd.npz'}")
    with pytest.raises(DataError, match=r"odd.npz: images are 1×30×30"):
        run_tokenize(cfg, log=lambda *a: None)
    assert not root.exists() or os.listdir(root) == []


def test_failure_midway_leaves_no_partial_outputs(tmp_path):
    """num_codes above the number of training latents fails after the VAE trained: nothing lands."""
    root = tmp_path / "out"
    cfg = small_config(root, "data.limit=40", "vae.epochs=1", "codebook.num_codes=5000")
    with pytest.raises(ValueError, match="at least k=5000 rows"):
        run_tokenize(cfg, log=lambda *a: None)
    assert os.listdir(root) == []


def test_config_errors():
    with pytest.raises(ConfigError, match="data.dataset: 'imagenet' is not one of mnist_sample"):
        from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", ["data.dataset=imagenet"]))
    with pytest.raises(ConfigError, match="Could not override 'vae.epoch'"):
        compose("tokenizer/mnist_sample", ["vae.epoch=3"])
    with pytest.raises(ConfigError, match="vae.epochs: expected int"):
        from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", ["vae.epochs=three"]))
    with pytest.raises(ConfigError, match="no such config; available in tokenizer: cifar10, fashion"):
        compose("tokenizer/imagenet", [])


def test_cli_missing_data_file_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "arplatform.tokenize", "--config-name", "tokenizer/mnist",
         f"data.data_dir={tmp_path}", f"output_root={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "train-images-idx3-ubyte.gz: mnist train file not found (pass download=true" in proc.stderr
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_evaluate_command_reproduces_the_report(tokenized, tmp_path):
    root, result = tokenized
    out = root / "codebook" / "mnist_sample"
    before = json.loads((out / "tokenizer_eval.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "arplatform.evaluate", "--codebook-dir", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    after = json.loads(proc.stdout)
    for key in ("psnr_real_vs_vae", "psnr_real_vs_quantised", "ssim_real_vs_quantised", "codebook_usage"):
        assert after[key] == pytest.approx(before[key], rel=1e-4), key
    proc = subprocess.run([sys.executable, "-m", "arplatform.evaluate", "--codebook-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "codebook.pt: not found" in proc.stderr


@pytest.mark.slow
def test_ray_engine_writes_the_codes_the_local_engine_computes(tmp_path, ray_cluster):
    """engine=ray: the VAE trains data-parallel on Ray Train, then Ray Data actors encode the
    images and write the code shards in parallel; read in order they are codes.npy, and the local
    engine's computation on the same VAE and codebook gives the same codes, train and held-out."""
    from types import SimpleNamespace

    from helpers import job_env

    from arplatform.stages.tokenize import codes_here

    root = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "arplatform.tokenize", "--config-name", "tokenizer/mnist_sample", "data.limit=600",
         "vae.epochs=2", "vae.batch_size=32", "vae.channels=16", "codebook.num_codes=16", f"output_root={root}",
         "engine=ray", "actors=2", "cpus_per_actor=0.5", "tracking.enabled=false"],
        env=job_env(ray_cluster), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "vae: Ray Train, 2 worker(s), 0.5 CPU each" in proc.stdout  # the VAE data-parallel on Ray Train
    assert "encode: 2 actor(s), 0.5 CPU each, 2 chunks of 512 images" in proc.stdout
    (version,) = [v for v in os.listdir(root / "tokenizers" / "mnist_sample") if v != "current"]
    assert sorted(os.listdir(root / "tokenizers" / "mnist_sample" / version)) == ["codebook", "vae"]  # no Ray state
    out = root / "codebook" / "mnist_sample"
    shards = sorted(f for f in os.listdir(out / "shards") if f.startswith("codes-"))
    assert shards == ["codes-00000.npy", "codes-00001.npy"] and not (out / "val_shards").exists()
    codes, val_codes = np.load(out / "codes.npy"), np.load(out / "val_codes.npy")
    assert np.array_equal(np.concatenate([np.load(out / "shards" / s) for s in shards]), codes)
    labels = np.concatenate([np.load(out / "shards" / s.replace("codes", "labels")) for s in shards])
    assert np.array_equal(labels, np.load(out / "labels.npy"))

    vae = load_vae(root / "vae_mnist_sample" / "checkpoints" / "best.pt")
    centres = load_codebook_file(out / "codebook.pt")["z_medoid"]
    images = load_images("mnist_sample", None, "train", False, None, 1, 600).images
    _, local = codes_here(vae, SimpleNamespace(centres=centres), images, "cpu", lambda line: None)
    val_idx = np.array(json.loads((out / "split.json").read_text())["val_indices"])
    train_idx = np.setdiff1d(np.arange(600), val_idx)
    assert np.array_equal(local[train_idx], codes) and np.array_equal(local[val_idx], val_codes)
