"""What a sampling job draws with: the checkpoint, codebook and VAE, checked to fit together and
identified by the SHA-256 of the bytes checked (`resolve_models`), and the sampler settings that
apply to a checkpoint (`checkpoint_sampler_settings`, `tuned_sampler_settings`). `generate`, the
training job's sample grid, the pipeline and the sampler sweep all use these."""

from __future__ import annotations

import dataclasses
import math
import os

from .. import storage, tracking
from ..config import GenerateConfig
from ..core.checkpoint import load_model
from ..core.codebook import load_codebook_file
from ..core.errors import CheckpointError, DataError
from ..core.vae import load_vae
from ..errors import ConfigError
from ..publish import codebook_vae_path


def model_files(cfg: GenerateConfig) -> GenerateConfig:
    """A `models:/…` or `runs:/…` checkpoint as the three files of that MLflow model, downloaded
    (a codebook or VAE given explicitly still wins); any other checkpoint as it is."""
    if not tracking.is_model_uri(cfg.transformer_ckpt):
        return cfg
    from .mlflow_model import fetch_model

    files = fetch_model(cfg.transformer_ckpt, tracking.tracking_uri(cfg.tracking_uri, cfg.output_root))
    return dataclasses.replace(cfg, transformer_ckpt=files["transformer_ckpt"],
                               codebook_pt=cfg.codebook_pt or files["codebook_pt"],
                               vae_ckpt=cfg.vae_ckpt or files["vae_ckpt"])


def resolve_models(cfg: GenerateConfig) -> dict:
    """Absolute paths (or URIs) of checkpoint, codebook and VAE with the SHA-256 of the bytes
    checked here (every sampler loads exactly those bytes, `ImageSampler`), checked to fit
    together: shapes always, and identities where the checkpoint records those it trained with.
    A checkpoint given as an MLflow model URI is downloaded first, then checked the same way."""
    model_uri = cfg.transformer_ckpt if tracking.is_model_uri(cfg.transformer_ckpt) else None
    cfg = model_files(cfg)
    ckpt_path = storage.absolute(cfg.transformer_ckpt)
    if not storage.isfile(ckpt_path):
        raise CheckpointError(f"{ckpt_path}: transformer checkpoint not found (train one, or pass --transformer_ckpt)")
    with storage.pinned(ckpt_path) as (local, ckpt_sha):
        model, layout, ckpt = load_model(local)
    trained = ckpt.get("train_config") or {}
    codebook_pt = cfg.codebook_pt or trained_codebook(trained)
    if not codebook_pt:
        raise ConfigError(f"{ckpt_path}: the checkpoint names no codebook; pass --codebook_pt")
    codebook_pt = storage.absolute(codebook_pt)
    if not storage.isfile(codebook_pt):
        raise CheckpointError(f"{codebook_pt}: codebook not found (pass --codebook_pt)")
    with storage.pinned(codebook_pt) as (local, codebook_sha):
        codebook = load_codebook_file(local)
    vae_ckpt = storage.absolute(cfg.vae_ckpt) if cfg.vae_ckpt else codebook_vae_path(codebook_pt, codebook)
    if not vae_ckpt:
        raise ConfigError(f"{codebook_pt}: the codebook names no VAE; pass --vae_ckpt")
    if not storage.isfile(vae_ckpt):
        raise CheckpointError(f"{vae_ckpt}: VAE checkpoint not found (pass --vae_ckpt)")
    with storage.pinned(vae_ckpt) as (local, vae_sha):
        vae = load_vae(local)
    if not cfg.allow_mismatch:
        check_identity("codebook", codebook_pt, codebook_sha, trained.get("codebook_sha256"), ckpt_path)
        check_identity("VAE", vae_ckpt, vae_sha, trained.get("vae_sha256"), ckpt_path)
    k, d = codebook["z_medoid"].shape
    if k != layout.num_codes:
        raise DataError(f"{codebook_pt}: the codebook has {k} codes but {ckpt_path} was trained on "
                        f"{layout.num_codes}; pass the codebook it was trained on (--codebook_pt)")
    if d != vae.config.latent_dim:
        raise DataError(f"{vae_ckpt}: the VAE's latent_dim is {vae.config.latent_dim} but {codebook_pt} holds "
                        f"{d}-dim vectors; pass the VAE of that codebook (--vae_ckpt)")
    positions = math.prod(ckpt["grid_shape"])
    if positions != vae.config.grid_size ** 2:
        raise DataError(f"{vae_ckpt}: the VAE decodes a {vae.config.grid_size}² grid but {ckpt_path} samples "
                        f"{positions} codes per image")
    return {"transformer_ckpt": ckpt_path, "codebook_pt": codebook_pt, "vae_ckpt": vae_ckpt, "layout": layout,
            "transformer_sha256": ckpt_sha, "codebook_sha256": codebook_sha, "vae_sha256": vae_sha,
            "model_config": model.config, "image_pixels": vae.config.image_size ** 2,
            "weights_bytes": tensor_bytes(model) + tensor_bytes(vae) + codebook["z_medoid"].nbytes,
            "config_name": trained.get("name") or "samples", "model_uri": model_uri}


def tensor_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def check_identity(what: str, path: str, sha: str, trained_sha: str | None, ckpt_path: str) -> None:
    """A codebook or VAE whose bytes differ from those the checkpoint was trained with decodes
    its codes into the wrong images, silently: refused, unless --allow_mismatch."""
    if trained_sha and sha != trained_sha:
        raise DataError(f"{path}: not the {what} {ckpt_path} was trained with (SHA-256 {sha[:12]}…, the "
                        f"checkpoint records {trained_sha[:12]}…); pass that {what}, or --allow_mismatch to "
                        "decode with this one anyway")


SAMPLER_KEYS = ("temperature", "top_k", "top_p", "cfg_scale")


def checkpoint_sampler_settings(checkpoint: str) -> dict:
    """The sampling settings a checkpoint's training config asked for (its `sample:` section,
    e.g. a lower temperature for the demo's small model), or {}; then a sampler sweep's
    sampler.json beside it wins (`tuned_sampler_settings`)."""
    if not storage.isfile(checkpoint):
        return {}  # run_generate names the missing file
    try:
        _, _, ckpt = load_model(storage.fetch(checkpoint))
    except (CheckpointError, DataError):
        return {}  # run_generate says what is wrong with it, in one line
    section = (ckpt.get("train_config") or {}).get("sample") or {}
    trained = {k: section[k] for k in SAMPLER_KEYS if k in section}
    return trained | tuned_sampler_settings(checkpoint)


def tuned_sampler_settings(checkpoint: str, sampled: str | None = None) -> dict:
    """temperature, top_k, top_p and cfg_scale a sampler sweep wrote beside `checkpoint`
    (`arplatform.tune_sampler`), or {}. They apply only to the checkpoint they were tuned on:
    the one whose SHA-256 sampler.json records, compared with `sampled` (default: `checkpoint`
    itself; the training job samples its new best.pt before it replaces the seed's path)."""
    import sys

    tuned = read_sampler_file(checkpoint)
    if not tuned:
        return {}
    path, settings = tuned["path"], tuned["sample"]
    target = sampled or checkpoint
    if tuned["checkpoint_sha256"] != storage.sha256(target):
        print(f"note: {path} was tuned on another checkpoint than {target}; its settings are not used",
              file=sys.stderr, flush=True)
        return {}
    return settings


def read_sampler_file(checkpoint: str) -> dict:
    """The sampler.json beside `checkpoint`, checked ({} when there is none): a mapping whose
    `sample` holds only sampler keys with values a `sample:` section allows. A training job checks
    it before it starts, so a damaged file stops it in one line, not after training."""
    from ..config import SampleConfig, from_dict
    from ..core.io import read_json_object

    path = storage.join(storage.dirname(storage.absolute(checkpoint)), "sampler.json")
    if not storage.exists(path):
        return {}
    tuned = read_json_object(storage.fetch(path), DataError)
    settings = tuned.get("sample")
    if not isinstance(settings, dict) or set(settings) - set(SAMPLER_KEYS):
        raise DataError(f"{path}: expected a 'sample' mapping of {', '.join(SAMPLER_KEYS)} "
                        "(written by arplatform.tune_sampler)")
    try:
        from_dict(SampleConfig, settings, "sample")
    except ConfigError as e:
        raise DataError(f"{path}: {e}") from None
    return {"path": path, "sample": settings, "checkpoint_sha256": tuned.get("checkpoint_sha256")}


def trained_codebook(train_config: dict) -> str | None:
    """The codebook a checkpoint was trained on: recorded by the training job, or (older
    checkpoints) its data section, relative to the working directory."""
    if train_config.get("codebook_pt"):
        return train_config["codebook_pt"]
    data = train_config.get("data") or {}
    if data.get("codebook"):
        return data["codebook"]
    folder = data.get("codebook_dir")
    return os.path.join(folder, "codebook.pt") if folder else None

