"""Samples of a checkpoint trained on a real tokenizer output: `evaluate samples` reads them
against the dataset behind the codebook, and the sampler sweep (Ray Tune) writes the settings
`generate` then uses. Small sizes: a 600-image tokenizer, an untrained GPT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import job_env

from arplatform import GPT, GPTConfig, TokenLayout, save_checkpoint
from arplatform.cli import compose
from arplatform.config import TokenizerConfig, from_dict
from arplatform.stages.tokenize import run_tokenize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tok = from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", [
        "data.limit=600", "vae.epochs=2", "vae.batch_size=32", "vae.channels=16", "vae.warmup_steps=5",
        "codebook.num_codes=16", f"output_root={root}", "tracking.enabled=false"]))
    run_tokenize(tok, log=lambda *a: None)
    codebook = os.path.realpath(os.path.join(root, "codebook", "mnist_sample", "codebook.pt"))
    torch.manual_seed(0)
    layout = TokenLayout(16, 10)
    folder = root / "transformer" / "tiny" / "checkpoints"
    ckpt = save_checkpoint(folder / "best.pt", GPT(GPTConfig(layout.vocab_size, 52, 32, 1, 2)), layout,
                           grid_shape=(7, 7), train_config={"name": "tiny", "codebook_pt": codebook})
    return root, ckpt


def run(module, *args, timeout=600, cluster=None, cwd=None):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=job_env(cluster), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def test_evaluate_samples_writes_the_report(checkpoint, tmp_path):
    root, ckpt = checkpoint
    out = tmp_path / "s"
    gen = run("arplatform", "generate", "--transformer_ckpt", ckpt, "--num_samples", 30, "--out", out)
    assert gen.returncode == 0, gen.stderr
    ev = run("arplatform", "evaluate", "samples", "--samples-dir", out, "--output-root", root)
    assert ev.returncode == 0, ev.stderr
    report = json.loads((out / "quality.json").read_text())
    assert 0.0 <= report["accuracy"] <= 1.0 and len(report["accuracy_per_class"]) == 10
    assert {"samples", "real_vs_real", "tokenizer_reconstructions"} <= set(report["frechet"])
    assert report["memorisation"]["ratio"] > 0 and report["heldout_bits_per_code"] > 0
    assert "class accuracy" in (out / "quality.md").read_text() and "Fréchet" in ev.stdout
    assert os.listdir(root / "classifiers")  # trained once, cached for the next evaluation
    missing = run("arplatform", "evaluate", "samples", "--samples-dir", tmp_path / "none")
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0, missing.stderr
    # another model republished at the manifest's path: no figure comes from it (N4)
    saved = Path(ckpt).read_bytes()
    try:
        torch.manual_seed(1)
        layout = TokenLayout(16, 10)
        save_checkpoint(ckpt, GPT(GPTConfig(layout.vocab_size, 52, 32, 1, 2)), layout, grid_shape=(7, 7),
                        train_config={"name": "tiny"})
        again = run("arplatform", "evaluate", "samples", "--samples-dir", out, "--output-root", root)
        assert again.returncode == 0 and "held-out bits per code not computed" in again.stdout, again.stderr
        assert json.loads((out / "quality.json").read_text())["heldout_bits_per_code"] is None
    finally:
        Path(ckpt).write_bytes(saved)


def test_sampler_sweep_writes_settings_that_generate_uses(checkpoint, tmp_path, ray_cluster):
    root, ckpt = checkpoint
    # relative paths, as the docs write them: the trials (in Ray's working directories) get absolute ones
    sweep = run("arplatform", "tune-sampler", "--config-name", "sampler_tune/mnist_sample",
                f"transformer_ckpt={os.path.relpath(ckpt, root)}", "output_root=.", "trials=1", "num_samples=20",
                "cpus_per_trial=0.5", "~space", "+space={sample: {cfg_scale: {grid: [1.0, 3.0]}}}",
                cluster=ray_cluster, cwd=root)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    for noise in ("UserWarning", "Traceback", "Exception ignored"):  # per-trial noise, a trial's SIGTERM (N25)
        assert noise not in sweep.stdout + sweep.stderr, sweep.stderr[-3000:]
    settings = json.loads((Path(ckpt).parent / "sampler.json").read_text())
    assert settings["sample"]["cfg_scale"] in (1.0, 3.0) and settings["frechet"] > 0
    (board,) = (root / "sampler_tune").glob("*/leaderboard.csv")
    assert len(board.read_text().strip().splitlines()) == 1 + 2
    assert (board.parent / "parallel.png").stat().st_size > 0  # the settings against accuracy and Fréchet
    assert "![parallel](parallel.png)" in (board.parent / "report.md").read_text()
    gen = run("arplatform", "generate", "--transformer_ckpt", ckpt, "--num_samples", 4, "--out", tmp_path / "g")
    assert gen.returncode == 0 and "sampler.json" in gen.stdout, gen.stderr
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["settings"]["cfg_scale"] == settings["sample"]["cfg_scale"]
