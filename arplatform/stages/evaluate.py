"""The evaluation stage: the held-out quality of a tokenizer output folder
(`evaluate_codebook_dir`) and the quality of a folder of generated samples (`evaluate_samples`)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..config import TokenizerConfig, from_dict
from ..core.budget import resolve_device
from ..core.codebook import assign, codebook_usage, load_codebook_file
from ..core.data import load_codes
from ..core.errors import ConfigError, DataError
from ..core.io import read_json_object, save_json
from ..core.vae import load_vae
from ..data.datasets import load_images
from ..data.images import save_png
from ..jobs.real_images import read_indices, real_data
from ..jobs.tokenizer_quality import PICTURE, encode_means, evaluate_tokenizer
from ..outputs import storage
from ..outputs.publish import codebook_vae_path


def evaluate_codebook_dir(codebook_dir: str, vae_path: str | None = None, device: str = "auto", log=print) -> dict:
    """The held-out evaluation of a tokenizer folder again (its config and split; the VAE from
    `vae_path` or the codebook), rewriting tokenizer_eval.json."""
    dev = resolve_device(device)
    paths = {n: os.path.join(codebook_dir, n) for n in ("codebook.pt", "tokenizer_config.json", "split.json")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise DataError(f"{path}: not found ({name} is written by arplatform tokenize)")
    saved = read_json_object(paths["tokenizer_config.json"], DataError)
    saved.pop("config_name", None)
    try:
        cfg = from_dict(TokenizerConfig, saved)
    except ConfigError as e:
        raise DataError(f"{paths['tokenizer_config.json']}: {e}") from e
    val_idx = read_indices(paths["split.json"], "val_indices")
    codebook = load_codebook_file(paths["codebook.pt"])
    vae_path = vae_path or codebook_vae_path(paths["codebook.pt"], codebook)
    if not vae_path:
        raise DataError(f"{paths['codebook.pt']}: names no VAE checkpoint; pass --vae")
    vae = load_vae(vae_path, map_location=dev)
    data = load_images(cfg.data)
    if val_idx.size == 0 or val_idx.max() >= len(data):
        raise DataError(f"{paths['split.json']}: held-out indices do not fit the {len(data)} images of {data.source}")
    val = data.subset(val_idx)
    latents = encode_means(vae, val.images, dev, log=log)
    dim = latents.shape[-1]
    val_codes = assign(latents.reshape(-1, dim).to(dev), codebook["z_medoid"])[0].reshape(len(val), -1).cpu()
    all_codes = [load_codes(os.path.join(codebook_dir, n))[0] for n in ("codes.npy", "val_codes.npy")
                 if os.path.exists(os.path.join(codebook_dir, n))]
    usage = codebook_usage(np.concatenate(all_codes) if all_codes else val_codes.numpy(), len(codebook["z_medoid"]))
    report, picture = evaluate_tokenizer(vae, codebook["z_medoid"], val, latents, val_codes.numpy(), usage, dev)
    save_json(os.path.join(codebook_dir, "tokenizer_eval.json"), report)
    save_png(os.path.join(codebook_dir, PICTURE), picture)
    return report


# ---------------------------------------------------------------------------
# Sample quality


def read_samples(samples: storage.Location) -> tuple[dict, np.ndarray, np.ndarray]:
    """The manifest, images and labels of a samples folder `arplatform generate` wrote, each
    checked: anything else is one line naming the file."""
    if not samples.exists("manifest.json"):
        why = "not a samples folder arplatform generate wrote (no manifest.json)" if samples.exists() else \
            "no such folder"
        raise DataError(f"samples_dir: {samples}: {why}")
    manifest = samples.read_json_object("manifest.json", DataError)
    missing = [k for k in ("checkpoint", "checkpoint_sha256", "codebook_pt") if not isinstance(manifest.get(k), str)]
    if missing:
        raise DataError(f"{samples.file('manifest.json')}: not a samples manifest (no {missing[0]}); pass a folder "
                        "arplatform generate wrote")
    npz_path = samples.file("samples.npz")
    if not samples.exists("samples.npz"):
        raise DataError(f"{npz_path}: not found (written by arplatform generate)")
    try:
        with np.load(samples.fetch("samples.npz"), allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (ValueError, OSError, KeyError, EOFError, AttributeError, TypeError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise DataError(f"{npz_path}: not a samples file holding images and labels ({reason})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.shape != (len(images),):
        raise DataError(f"{npz_path}: expected uint8 images (N, H, W[, C]) and N labels, got {images.dtype} "
                        f"{images.shape} and labels {labels.shape}")
    return manifest, images, labels


def evaluate_samples(samples_dir: str, output_root: str = "experiments", log=print) -> dict:
    """A samples folder's quality against its codebook's real data: quality.json, quality.md, and
    the metrics in the checkpoint's MLflow run."""
    from ..data.images import png_bytes
    from ..jobs.sample_quality import (
        classifier_dir,
        evaluate_images,
        heldout_bits_per_code,
        load_or_train_classifier,
        pictures,
    )

    samples = storage.Location(samples_dir)
    manifest, images, labels = read_samples(samples)
    npz_path = samples.file("samples.npz")
    images = (images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
    model, layout, ckpt = checkpoint_of(manifest, log)
    real, tok_cfg, folder = real_data(tokenizer_codebook(manifest, ckpt), len(images), log)
    if images.shape[1:] != real.val_images.shape[1:]:
        raise DataError(f"{npz_path}: images of shape {images.shape[1:]} but the dataset's are "
                        f"{real.val_images.shape[1:]}")
    classifier_cache = classifier_dir(storage.Root(output_root).local, tok_cfg.data)  # this machine's cache
    classifier, accuracy = load_or_train_classifier(classifier_cache, real, log)
    report = evaluate_images(images, labels, real, classifier)
    report["classifier_heldout_accuracy"] = accuracy
    val_labels = os.path.join(folder, "val_labels.npy")
    report["heldout_bits_per_code"] = None if model is None else heldout_bits_per_code(
        model, layout, os.path.join(folder, "val_codes.npy"), val_labels if layout.conditional else None)
    report["samples_dir"], report["checkpoint"] = samples.path, manifest["checkpoint"]
    for name, picture in pictures(images, real).items():  # nearest.png, reconstructions.png
        samples.write_bytes(f"{name}.png", png_bytes(picture))
    samples.write_json("quality.json", report)
    samples.write_text("quality.md", quality_table(report))
    log_to_training_run(manifest, report, samples, log)
    return report


def quality_table(r: dict) -> str:
    fd = r["frechet"]
    rows = [("samples", str(r["num_samples"])),
            ("class accuracy (platform classifier)", f"{r['accuracy']:.3f}" if "accuracy" in r else "n/a"),
            ("classifier's own held-out accuracy", f"{r['classifier_heldout_accuracy']:.3f}"),
            ("Fréchet distance, samples vs held-out", f"{fd['samples']:.2f}"),
            ("Fréchet distance, tokenizer reconstructions", f"{fd.get('tokenizer_reconstructions', float('nan')):.2f}"),
            ("Fréchet distance, real vs real", f"{fd['real_vs_real']:.2f}"),
            ("samples / reconstructions", f"{fd.get('samples_over_reconstructions', float('nan')):.2f}×"),
            ("memorisation ratio (sample→train / held-out→train)", f"{r['memorisation']['ratio']:.2f}"),
            ("held-out bits per code", "n/a (checkpoint gone)" if r["heldout_bits_per_code"] is None
             else f"{r['heldout_bits_per_code']:.3f}")]
    return "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)


def training_run_of(checkpoint: str, checkpoint_sha256: str) -> dict | None:
    """The run.json of the run whose best.pt drew the samples, by the SHA-256 the manifest records
    (never by which run is published now): the published run, the checkpoint's own, then all."""
    ckpt_dir = storage.Location(checkpoint).parent
    published = ckpt_dir.exists("published.json") and ckpt_dir.read_json_object("published.json", DataError)
    candidates = [published.get("run_dir")] if published else []
    candidates.append(ckpt_dir.parent.path)
    runs_dir = ckpt_dir.parent / "runs"
    candidates += [runs_dir.file(name) for name in sorted(runs_dir.listdir(), reverse=True)]
    for run_dir in dict.fromkeys(c for c in candidates if c):
        run = storage.Location(run_dir)
        if not run.exists("run.json"):
            continue
        state = run.read_json_object("run.json", DataError)
        best = "checkpoints/best.pt"
        recorded = state.get("best_sha256") or (run.sha256(best) if run.isfile(best) else None)
        if recorded == checkpoint_sha256:
            return dict(state, run_dir=run_dir)
    return None


def checkpoint_of(manifest: dict, log):
    """(model, layout, checkpoint) of exactly the bytes the samples were drawn with: the manifest's
    path if it still holds them, else its run's best.pt; Nones with a note when neither does."""
    from ..core.checkpoint import load_model

    sha = manifest["checkpoint_sha256"]
    state = None
    for path in (manifest["checkpoint"], "run"):
        if path == "run":
            state = training_run_of(manifest["checkpoint"], sha)
            path = state and state.get("run_dir") and storage.Location(state["run_dir"]).file("checkpoints/best.pt")
        checkpoint = storage.Location(path) if path else None
        if checkpoint and checkpoint.isfile() and checkpoint.sha256() == sha:
            with checkpoint.pinned(expected_sha256=sha) as (local, _):
                return load_model(local)
    log(f"{manifest['checkpoint']}: no longer the checkpoint these samples were drawn with (SHA-256 {sha[:12]}…), "
        "and no training run keeps it: held-out bits per code not computed")
    return None, None, None


def tokenizer_codebook(manifest: dict, ckpt: dict | None) -> str:
    """The codebook.pt of the tokenizer folder behind the samples: the manifest's, or for an MLflow
    model's lone copy the one the checkpoint trained on, if it holds the same bytes."""
    path = manifest["codebook_pt"]
    if storage.Location(path).parent.exists("tokenizer_config.json"):
        return path
    trained = ((ckpt or {}).get("train_config") or {}).get("codebook_pt")
    trained_file = storage.Location(trained) if trained else None
    if trained_file and trained_file.isfile() and trained_file.sha256() == manifest.get("codebook_sha256"):
        return trained
    return path  # real_data names what is missing


def log_to_training_run(manifest: dict, report: dict, samples: storage.Location, log) -> None:
    """The metrics go to the MLflow run that trained the checkpoint the samples were drawn with."""
    from ..tracking import mlflow_runs

    state = training_run_of(manifest["checkpoint"], manifest["checkpoint_sha256"])
    if state is None:
        log(f"no training run beside {manifest['checkpoint']} made the checkpoint these samples were drawn "
            f"with (SHA-256 {manifest['checkpoint_sha256'][:12]}…): the report stays in quality.json")
        return
    if not (state.get("tracking_uri") and state.get("mlflow_run_id")):
        return
    metrics = {"samples/frechet": report["frechet"]["samples"],
               "samples/memorisation_ratio": report["memorisation"]["ratio"],
               "heldout/bits_per_code": report["heldout_bits_per_code"]}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    if "accuracy" in report:
        metrics["samples/accuracy"] = report["accuracy"]
    mlflow_runs.log_metrics(state["tracking_uri"], state["mlflow_run_id"], metrics)
    mlflow_runs.log_artifact(state["tracking_uri"], state["mlflow_run_id"],
                          samples.fetch("quality.json"))
    log(f"logged to MLflow run {state['mlflow_run_id']} ({state['tracking_uri']})")
