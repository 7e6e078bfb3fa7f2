"""What a sampling job draws with: the checkpoint, codebook and VAE, checked to fit together and
identified by the SHA-256 of the bytes checked (`resolve_models`), and the sampler settings that
apply to a checkpoint, by one precedence (`resolve_sampling`). `generate`, the
training job's sample grid, the pipeline and the sampler sweep all use these."""

from __future__ import annotations

import dataclasses
import math
import os

from ..config import GenerateConfig
from ..core.checkpoint import load_model
from ..core.codebook import load_codebook_file
from ..core.errors import CheckpointError, ConfigError, DataError
from ..core.vae import load_vae
from ..outputs import storage
from ..outputs.publish import codebook_vae_path
from ..tracking import mlflow_runs


def model_files(cfg: GenerateConfig) -> tuple[GenerateConfig, dict | None]:
    """A `models:/…` or `runs:/…` checkpoint as its MLflow model's three files (explicit codebook
    or VAE win) and logged sampling settings; any other checkpoint as it is, and None."""
    if not mlflow_runs.is_model_uri(cfg.transformer_ckpt):
        return cfg, None
    from .mlflow_model import fetch_model

    files = fetch_model(cfg.transformer_ckpt, mlflow_runs.tracking_uri(cfg.tracking_uri, cfg.output_root))
    return dataclasses.replace(cfg, transformer_ckpt=files["transformer_ckpt"],
                               codebook_pt=cfg.codebook_pt or files["codebook_pt"],
                               vae_ckpt=cfg.vae_ckpt or files["vae_ckpt"]), files["sample"]


def resolve_models(cfg: GenerateConfig) -> dict:
    """Checkpoint, codebook and VAE (paths or URIs) with the SHA-256 of the bytes checked here
    (every sampler loads exactly those), checked to fit together (shapes; identities where the
    checkpoint records them), and the settings to draw with (`resolve_sampling`, key "sample")."""
    model_uri = cfg.transformer_ckpt if mlflow_runs.is_model_uri(cfg.transformer_ckpt) else None
    cfg, recorded = model_files(cfg)
    ckpt_file = storage.Location(cfg.transformer_ckpt)
    ckpt_path = ckpt_file.path
    if not ckpt_file.isfile():
        raise CheckpointError(f"{ckpt_path}: transformer checkpoint not found (train one, or pass --transformer_ckpt)")
    with ckpt_file.pinned() as (local, ckpt_sha):
        model, layout, ckpt = load_model(local)
    trained = ckpt.get("train_config") or {}
    codebook_pt = cfg.codebook_pt or trained_codebook(trained)
    if not codebook_pt:
        raise ConfigError(f"{ckpt_path}: the checkpoint names no codebook; pass --codebook_pt")
    codebook_file = storage.Location(codebook_pt)
    codebook_pt = codebook_file.path
    if not codebook_file.isfile():
        raise CheckpointError(f"{codebook_pt}: codebook not found (pass --codebook_pt)")
    with codebook_file.pinned() as (local, codebook_sha):
        codebook = load_codebook_file(local)
    vae_ckpt = cfg.vae_ckpt or codebook_vae_path(codebook_pt, codebook)
    if not vae_ckpt:
        raise ConfigError(f"{codebook_pt}: the codebook names no VAE; pass --vae_ckpt")
    vae_file = storage.Location(vae_ckpt)
    vae_ckpt = vae_file.path
    if not vae_file.isfile():
        raise CheckpointError(f"{vae_ckpt}: VAE checkpoint not found (pass --vae_ckpt)")
    with vae_file.pinned() as (local, vae_sha):
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
            "config_name": trained.get("name") or "samples", "model_uri": model_uri,
            "sample": resolve_sampling(trained.get("sample") or {}, tuned_sampler_settings(ckpt_path)
                                       if recorded is None else recorded, cfg.sample)}


def tensor_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def check_identity(what: str, path: str, sha: str, trained_sha: str | None, ckpt_path: str) -> None:
    """A codebook or VAE whose bytes differ from those the checkpoint was trained with decodes
    its codes into the wrong images, silently: refused, unless --allow_mismatch."""
    if trained_sha and sha != trained_sha:
        raise DataError(f"{path}: not the {what} {ckpt_path} was trained with (SHA-256 {sha[:12]}…, the "
                        f"checkpoint records {trained_sha[:12]}…); pass that {what}, or --allow_mismatch to "
                        "decode with this one anyway")


def resolve_sampling(own: dict, tuned: dict, explicit: dict) -> dict:
    """The settings every sampler draws with (all SAMPLING_KEYS), by the one precedence, lowest
    first (as Hugging Face's GenerationConfig):

      1. the defaults (`config.SampleConfig`);
      2. `own`: the `sample:` section the checkpoint was trained with;
      3. `tuned`: the sampler.json tuned for exactly these bytes (SHA-256), or an MLflow model's;
      4. `explicit`: only the keys a person set (a flag, `key=value`, `train.sample.<key>=…`).
    """
    from ..config import SAMPLING_KEYS, SampleConfig, check_sampling, to_dict

    settings = {k: v for k, v in to_dict(SampleConfig()).items() if k in SAMPLING_KEYS}
    settings |= {k: v for k, v in (own or {}).items() if k in SAMPLING_KEYS}
    return check_sampling(settings | (tuned or {}) | (explicit or {}))


def checkpoint_sampling(checkpoint: str, explicit: dict | None = None, sampled: str | None = None) -> dict:
    """`resolve_sampling` for a checkpoint file: its own settings, its sampler.json (tuned on
    `sampled`, default the checkpoint itself), then `explicit`."""
    _, _, ckpt = load_model(storage.Location(checkpoint).fetch())
    own = (ckpt.get("train_config") or {}).get("sample") or {}
    return resolve_sampling(own, tuned_sampler_settings(checkpoint, sampled), explicit or {})


def tuned_sampler_settings(checkpoint: str, sampled: str | None = None) -> dict:
    """The settings a sampler sweep wrote beside `checkpoint`, or {}: only when the SHA-256 that
    sampler.json records is `sampled`'s (default: the checkpoint's)."""
    import sys

    tuned = read_sampler_file(checkpoint)
    if not tuned:
        return {}
    path, settings = tuned["path"], tuned["sample"]
    target = sampled or checkpoint
    if tuned["checkpoint_sha256"] != storage.Location(target).sha256():
        print(f"note: {path} was tuned on another checkpoint than {target}; its settings are not used",
              file=sys.stderr, flush=True)
        return {}
    return settings


def read_sampler_file(checkpoint: str) -> dict:
    """The sampler.json beside `checkpoint`, checked ({} when there is none); a training job
    checks it before it starts, so a damaged file stops it in one line."""
    from ..config import check_sampling
    folder = storage.Location(checkpoint).parent
    path = folder.file("sampler.json")
    if not folder.exists("sampler.json"):
        return {}
    tuned = folder.read_json_object("sampler.json", DataError)
    settings = tuned.get("sample")
    try:
        check_sampling(settings)
    except ConfigError as e:
        raise DataError(f"{path}: {e} (written by arplatform tune-sampler)") from None
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

