"""The tokenizer stage: images → VAE → codebook → codes.npy (+ labels, shards, evaluation).

With kind=vq, a pretrained VQ (LlamaGen's VQ-16, `core/vq.py`) replaces steps 2 and 3: it is
loaded, saved where the VAE would be, and its codebook encodes (`pretrained_vq`).

    run_tokenize(cfg)
      1. load_split             the images and a seeded train / held-out split
      2. train_vae              the spatial VAE (the core loop, `VAEObjective`)
      3. fit_codebook           k-means on the training latents; every image's codes
      4. evaluate_tokenizer     held-out PSNR / SSIM, codebook usage, and a picture of
                                held-out images above their reconstructions through codes
      5. write_codebook_folder  into a staging folder; then `publish.publish` makes the
                                VAE, codebook and codes visible together:

    <root>/vae_<name>/checkpoints/{best,last}.pt
    <root>/codebook/<name>/codebook.pt, codes.npy, labels.npy, val_codes.npy,
        val_labels.npy, split.json, tokenizer_eval.json, heldout_reconstructions.png
        [, shards/codes-00000.npy, labels-00000.npy …]
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from contextlib import nullcontext

import numpy as np
import torch

from ..config import TokenizerConfig, to_dict
from ..core.budget import resolve_device
from ..core.checkpoint import save_checkpoint
from ..core.codebook import KMeansResult, assign, fit_kmeans, save_codebook, usage_of_counts
from ..core.errors import ConfigError, DataError
from ..core.io import save_json, save_npy
from ..core.loop import IndexBatches, OptimConfig, fit
from ..core.progress import Progress
from ..core.vae import VAE, VAEConfig, VAEObjective, load_vae
from ..core.vq import ACTIVATION_BYTES, BATCH, VQ, check_vq_file, load_llamagen_vq
from ..data.datasets import ImageFiles, ImageSet, folder_files, load_images, readable, split_indices, warn_links
from ..data.images import save_png
from ..jobs.tokenized_codes import TokenizedCodes
from ..jobs.tokenizer_quality import PICTURE, encode_means, evaluate_tokenizer
from ..outputs import publish, storage
from ..tracking import mlflow_runs

EVAL_IMAGES = 10_000  # held-out images the report scores (PSNR, SSIM): the first of the split


def check_image_shape(data: ImageSet, downsample: int) -> None:
    c, h, w = data.shape
    if h != w or h % downsample or c not in (1, 3):
        raise DataError(
            f"{data.source}: images are {c}×{h}×{w}; the tokenizer needs square 1- or 3-channel images "
            f"with a side divisible by its downsampling, {downsample} (set data.image_size to resize)"
        )


def vae_setup(cfg: TokenizerConfig, train: ImageSet, steps_per_epoch: int) -> tuple[VAEConfig, OptimConfig]:
    """The VAE's model and loop configs (both engines)."""
    c, h, _ = train.shape
    vcfg = cfg.vae
    model_cfg = VAEConfig(in_channels=c, image_size=h, latent_dim=vcfg.latent_dim, channels=vcfg.channels,
                          recon_loss=vcfg.recon_loss, beta=vcfg.beta,
                          res_blocks=vcfg.res_blocks, downsample=vcfg.downsample)
    steps = vcfg.epochs * steps_per_epoch
    train_cfg = OptimConfig(batch_size=vcfg.batch_size, lr=vcfg.lr, epochs=vcfg.epochs, weight_decay=0.0,
                            warmup_steps=vcfg.warmup_steps, precision=vcfg.precision, class_dropout=0.0,
                            seed=cfg.data.seed, log_every=max(1, steps // 100))  # the bar moves 100 times
    return model_cfg, train_cfg


def train_vae(cfg: TokenizerConfig, train: ImageSet, val: ImageSet, ckpt_dir: str, device, log) -> VAE:
    """engine=local: the VAE in this process."""
    vcfg = cfg.vae
    batches = IndexBatches({"images": torch.from_numpy(train.images)}, vcfg.batch_size, seed=cfg.data.seed)
    val_batches = IndexBatches({"images": torch.from_numpy(val.images)}, 512, shuffle=False, drop_last=False)
    model_cfg, train_cfg = vae_setup(cfg, train, len(batches))
    torch.manual_seed(cfg.data.seed)
    vae = VAE(model_cfg).to(device)
    with Progress("vae", train_cfg.epochs * len(batches), "steps", log) as progress:

        def report(metrics: dict, step: int) -> None:
            progress.set(step)
            if "val/loss" in metrics:
                progress.note(f"vae epoch {metrics['epoch']:.0f}: val loss/image {metrics['val/loss']:.2f}")

        fit(vae, VAEObjective(vcfg.beta, vcfg.recon_loss), batches, len(batches), val_batches, train_cfg,
            device=device, checkpoint_dir=ckpt_dir, grid_shape=(model_cfg.grid_size,) * 2,
            run_config={"tokenizer": to_dict(cfg)}, callback=report)
    return load_vae(os.path.join(ckpt_dir, "best.pt"), map_location=device)


def check_ray_workers(ray, cfg: TokenizerConfig, shared: storage.Location) -> bool:
    """engine=ray on this cluster: a `shared` staging folder every node reaches, and room for the
    workers; whether they get GPUs."""
    from ..core.budget import check_fits, gets_gpus

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not shared.remote:
        raise ConfigError(f"output_root: engine=ray on {len(nodes)} nodes writes the VAE's checkpoints and the code "
                          f"shards where every node reaches them, and {cfg.output_root} is this machine's disk: set "
                          "output_root to a bucket URI (s3://…), or tokenize on one node")
    total = ray.cluster_resources()
    use_gpu = gets_gpus(cfg.use_gpu, total)
    if use_gpu:
        check_fits("actors", f"{cfg.actors} GPU VAE workers", cfg.actors, total.get("GPU", 0), "GPU",
                   "lower actors or pass use_gpu=false")
    else:
        check_fits("actors", f"{cfg.actors} VAE workers × {cfg.cpus_per_actor:g} CPU",
                   cfg.actors * cfg.cpus_per_actor, total.get("CPU", 0), "CPU", "lower actors or cpus_per_actor")
    return use_gpu


def train_vae_on_ray(cfg: TokenizerConfig, train: ImageSet, val: ImageSet, staging: str, shared: storage.Location,
                     log) -> VAE:
    """engine=ray: the VAE on Ray Train, `actors` workers, Ray's checkpoints in `shared`; best.pt
    into the staging folder."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..core.loop import decide_precision
    from ..distributed.cluster import init_ray
    from ..distributed.image_source import image_source
    from ..distributed.vae_worker import VAE_VAL_IMAGES, vae_worker
    from ..jobs.training import copy_checkpoint_files

    if len(train) // cfg.actors < cfg.vae.batch_size:
        raise DataError(f"{train.source}: {len(train)} training images over {cfg.actors} VAE workers (actors) are "
                        f"fewer than one batch of vae.batch_size={cfg.vae.batch_size} each; lower actors")
    ray = init_ray()
    use_gpu = check_ray_workers(ray, cfg, shared)
    threads = max(1, int(cfg.cpus_per_actor))
    model_cfg, train_cfg = vae_setup(cfg, train, len(train) // cfg.actors // cfg.vae.batch_size)
    if not use_gpu:  # one decision for every worker, timed at their thread count (as the GPT's)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            precision = decide_precision(train_cfg.precision, VAE(model_cfg),
                                         VAEObjective(cfg.vae.beta, cfg.vae.recon_loss), "cpu", log)
        finally:
            torch.set_num_threads(previous)
        train_cfg = dataclasses.replace(train_cfg, precision=precision)
    log(f"vae: Ray Train, {cfg.actors} worker(s), {'GPU' if use_gpu else f'{cfg.cpus_per_actor:g} CPU'} each")
    config = {"model": dataclasses.asdict(model_cfg), "train": train_cfg.to_dict(), "beta": cfg.vae.beta,
              "recon_loss": cfg.vae.recon_loss, "seed": cfg.data.seed, "threads": threads,
              "run_config": {"tokenizer": to_dict(cfg)}, "train_images": image_source(ray, train),
              "val_images": image_source(ray, val.subset(np.arange(min(len(val), VAE_VAL_IMAGES))))}
    trainer = TorchTrainer(
        vae_worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=cfg.actors, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": cfg.cpus_per_actor}),
        run_config=RunConfig(name="vae", storage_path=shared.file("ray"),
                             failure_config=FailureConfig(max_failures=2, controller_failure_limit=3),
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             logging_config=LoggingConfig(log_level="WARNING")))
    result = trainer.fit()
    ckpt_dir = os.path.join(staging, "vae", "checkpoints")
    copy_checkpoint_files(result.checkpoint, ckpt_dir)
    shared.remove_tree("ray")  # Ray's copies: not part of the version
    return load_vae(os.path.join(ckpt_dir, "best.pt"))


def write_shards(folder: str, codes: np.ndarray, labels: np.ndarray, shards: int) -> None:
    for i, (c, y) in enumerate(zip(np.array_split(codes, shards), np.array_split(labels, shards), strict=True)):
        save_npy(os.path.join(folder, f"codes-{i:05d}.npy"), c)
        save_npy(os.path.join(folder, f"labels-{i:05d}.npy"), y)


def fit_sample(cfg: TokenizerConfig, train_idx: np.ndarray) -> np.ndarray:
    """The training images the codebook is fitted on: all, or a seeded sample of codebook.fit_images."""
    if len(train_idx) <= cfg.codebook.fit_images:
        return train_idx
    rng = np.random.default_rng(cfg.codebook.seed)
    return np.sort(rng.choice(train_idx, cfg.codebook.fit_images, replace=False))


def fit_codebook(cfg: TokenizerConfig, latents: torch.Tensor, device, log):
    """k-means (or medoids) on the latents (N, h, w, D) of the training images it is fitted on
    (`fit_sample`): both engines fit the same codebook."""
    vectors = latents.reshape(-1, latents.shape[-1]).to(device)
    cb = cfg.codebook
    t_cb = time.perf_counter()
    km = fit_kmeans(vectors, cb.num_codes, iters=cb.iters, tol=cb.tol, seed=cb.seed, medoid=cb.mode == "medoid")
    log(f"codebook: K={cb.num_codes} ({cb.mode}) on {len(vectors)} latents of {len(latents)} images in "
        f"{time.perf_counter() - t_cb:.1f} s, {km.iterations} iterations, distortion {km.distortion:.4f}")
    return km


def codes_of(latents: torch.Tensor, km, device) -> np.ndarray:
    """Latents (N, h, w, D) → their codes (N, h·w), int32."""
    n, h, w, dim = latents.shape
    return assign(latents.reshape(-1, dim).to(device), km.centres)[0].reshape(n, h * w).cpu().numpy().astype(np.int32)


def latents_of(vae: VAE, data: ImageSet | ImageFiles, index: np.ndarray, device) -> torch.Tensor:
    """Latents (n, h, w, D) of the images at `index`, read a chunk at a time (a folder's files
    are decoded here, never all at once)."""
    from ..distributed.encode_actors import CHUNK

    parts = [encode_means(vae, data.read(index[s : s + CHUNK]), device, log=lambda line: None)
             for s in range(0, len(index), CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0)


def pretrained_vq(cfg: TokenizerConfig, data: ImageSet | ImageFiles, staging: str, log) -> tuple[VQ, KMeansResult]:
    """kind=vq: the published VQ saved where a trained VAE would be (kind "vq"), and its codebook."""
    c, h, _ = data.shape
    vq = load_llamagen_vq(cfg.vq.checkpoint, cfg.vq.model_config(h, c))  # (vq.sha256: checked by run_tokenize)
    source = {"checkpoint": os.path.abspath(cfg.vq.checkpoint), "sha256": storage.Location(cfg.vq.checkpoint).sha256()}
    save_checkpoint(os.path.join(staging, "vae", "checkpoints", "best.pt"), vq, kind="vq",
                    grid_shape=(vq.config.grid_size,) * 2, train_config={"tokenizer": to_dict(cfg), "source": source})
    log(f"vq: {cfg.vq.checkpoint} (SHA-256 {source['sha256'][:12]}…): K={vq.config.codebook_size} codes of "
        f"D={vq.config.latent_dim}, a {vq.config.grid_size}×{vq.config.grid_size} grid per {h}×{h} image")
    return vq, KMeansResult(vq.quantize.codebook().detach().float().clone(), 0.0, 0)


def codes_on_ray(cfg: TokenizerConfig, staging: str, shared: storage.Location, km, data: ImageSet, val_idx: np.ndarray,
                 log) -> TokenizedCodes:
    """engine=ray: actors encode every image into code shards in `shared`; the shards, in staging."""
    from ..core.codebook import save_codebook
    from ..distributed.cluster import init_ray
    from ..distributed.encode_actors import CHUNK, encode_on_actors
    from ..distributed.generate_actors import ACTOR_PROCESS_BYTES
    from ..distributed.image_source import image_source

    fitted = save_codebook(os.path.join(staging, "fitted-codebook.pt"), km.centres.cpu(), {})  # for the actors
    vae_ckpt = os.path.join(staging, "vae", "checkpoints", "best.pt")
    here = storage.Location(staging)
    spec = {"vae_ckpt": shared.file("vae/checkpoints/best.pt"),
            "codebook_pt": shared.file("fitted-codebook.pt"), "out": shared.file("codebook")}
    if shared.remote:  # a bucket: the actors on every node fetch them from there
        for name in ("vae/checkpoints/best.pt", "fitted-codebook.pt"):
            shared.write_bytes(name, here.read_bytes(name))
    is_val = np.zeros(len(data), dtype=bool)
    is_val[val_idx] = True
    ray = init_ray()
    spec |= {"images": image_source(ray, data), "labels": ray.put(data.labels), "is_val": ray.put(is_val)}
    c, h, w = data.shape  # a VAE's encoder holds ~64 floats a pixel for a chunk; a VQ encodes a few at a time
    activations = BATCH * ACTIVATION_BYTES * h * w // 256**2 if cfg.kind == "vq" else 64 * CHUNK * 4 * c * h * w
    memory = ACTOR_PROCESS_BYTES + os.path.getsize(vae_ckpt) + activations
    encode_on_actors(ray, cfg, spec, len(data), memory, log)
    os.remove(fitted)
    local = os.path.join(staging, "codebook")
    if shared.remote:  # in a bucket: into the staging folder, a shard at a time
        for folder in ("shards", "val_shards"):
            for name in shared.listdir(f"codebook/{folder}"):
                here.write_bytes(f"codebook/{folder}/{name}", shared.read_bytes(f"codebook/{folder}/{name}"))
    return TokenizedCodes.from_shards(local)


def write_codebook_folder(cfg: TokenizerConfig, config_name, folder: str, data: ImageSet, km, codes: TokenizedCodes,
                          train_idx: np.ndarray, val_idx: np.ndarray, report: dict, grid) -> None:
    """codebook.pt, the code and label splits, shards, split.json, the evaluation and the config."""
    cb, d = cfg.codebook, cfg.data
    codebook_config = {
        "num_codes": int(km.centres.shape[0]), "latent_dim": int(km.centres.shape[1]), "grid": list(grid),
        "mode": cb.mode if cfg.kind == "vae" else "vq",
        "num_classes": data.num_classes, "dataset": d.dataset, "name": cfg.name,
        # relative to this folder, inside the same published version: resolves from any cwd
        "vae_checkpoint": os.path.join("..", "vae", "checkpoints", "best.pt"),
    }
    save_codebook(os.path.join(folder, "codebook.pt"), km.centres, codebook_config, km.medoid_indices,
                  {"distortion": km.distortion, "usage": report["codebook_usage"],
                   "perplexity": report["codebook_perplexity"]})
    labels = data.labels.astype(np.int64)
    for prefix, split, idx in (("", "train", train_idx), ("val_", "val", val_idx)):
        codes.save(os.path.join(folder, f"{prefix}codes.npy"), split)
        save_npy(os.path.join(folder, f"{prefix}labels.npy"), labels[idx])
    if cfg.engine == "ray":  # the actors wrote shards/ already; held-out codes are in val_codes.npy
        shutil.rmtree(os.path.join(folder, "val_shards"))
    elif cfg.shards:
        write_shards(os.path.join(folder, "shards"), np.concatenate(list(codes.parts("train"))), labels[train_idx],
                     cfg.shards)
    save_json(os.path.join(folder, "split.json"),
              {"seed": d.seed, "val_fraction": d.val_fraction, "num_train": len(train_idx),
               "num_val": len(val_idx), "val_indices": val_idx.tolist(), "source": data.source})
    save_json(os.path.join(folder, "tokenizer_eval.json"), report)
    save_json(os.path.join(folder, "tokenizer_config.json"), to_dict(cfg) | {"config_name": config_name})


def load_split(cfg: TokenizerConfig, log) -> tuple[ImageSet | ImageFiles, np.ndarray, np.ndarray]:
    """The images (decoded here; for engine=ray on a folder, its files, checked on Ray) and a
    seeded train / held-out split of them."""
    d = cfg.data
    if cfg.engine == "ray" and d.dataset == "folder":
        data = scanned_files(cfg, log)
    else:
        data = load_images(d)
    check_image_shape(data, cfg.vae.downsample if cfg.kind == "vae" else cfg.vq.downsample)
    if cfg.shards > len(data):
        raise DataError(f"{data.source}: shards={cfg.shards} but there are only {len(data)} images")
    train_idx, val_idx = split_indices(len(data), d.val_fraction, d.seed)
    if len(train_idx) < cfg.vae.batch_size:
        raise DataError(f"{data.source}: {len(train_idx)} training images are fewer than one batch of "
                        f"vae.batch_size={cfg.vae.batch_size}")
    log(f"{data.source}: {len(train_idx)} train / {len(val_idx)} val images of {data.shape}")
    if data.skipped:
        shown = "; ".join(why for _, why in data.skipped[:3])
        log(f"{len(data.skipped)} unreadable image(s) skipped (data.bad_images=skip): {shown}"
            + (" …" if len(data.skipped) > 3 else ""))
    return data, train_idx, val_idx


def scanned_files(cfg: TokenizerConfig, log) -> ImageFiles:
    """A folder's files, every one decoded once by Ray Data tasks: the unreadable ones refused
    or skipped (data.bad_images) before anything trains; no pixels kept on the driver."""
    from ..distributed.cluster import init_ray
    from ..distributed.image_source import scan_files

    d = cfg.data
    files = folder_files(d.data_dir, d.image_size, d.channels, d.max_pixels, d.crop)
    if d.limit:
        files = files.subset(np.arange(min(d.limit, len(files))))
    files = readable(files, scan_files(init_ray(), files, log), d.bad_images)
    warn_links(files)
    return files


def quality_line(report: dict) -> str:
    return (f"tokenizer eval (held-out): PSNR real/VAE {report['psnr_real_vs_vae']:.2f} dB, "
            f"real/quantised {report['psnr_real_vs_quantised']:.2f} dB, SSIM real/quantised "
            f"{report['ssim_real_vs_quantised']:.3f}, codebook usage {report['codebook_usage']:.1%}, "
            f"perplexity {report['codebook_perplexity']:.1f}")


def codebook_and_codes(cfg: TokenizerConfig, vae: VAE | VQ, data: ImageSet | ImageFiles, train_idx: np.ndarray,
                       val_idx: np.ndarray, eval_idx: np.ndarray, staging: str, shared: storage.Location, device, log,
                       km: KMeansResult | None = None):
    """The codebook (`km`, a VQ's, or k-means on the training latents), every image's codes, and
    the latents of the held-out images the report scores (`eval_idx`)."""
    fit_idx = fit_sample(cfg, train_idx)
    if cfg.engine == "ray":  # the actors encode every image; here only the codebook's sample
        km = km or fit_codebook(cfg, latents_of(vae, data, fit_idx, device), device, log)
        codes = codes_on_ray(cfg, staging, shared, km, data, val_idx, log)
        return km, codes, latents_of(vae, data, eval_idx, device)
    latents = encode_means(vae, data.images, device, log=log)  # every image once: sample, codes, report
    km = km or fit_codebook(cfg, latents[torch.from_numpy(fit_idx)], device, log)
    codes = TokenizedCodes.in_memory(codes_of(latents, km, device), train_idx, val_idx)
    return km, codes, latents[torch.from_numpy(eval_idx)]


def make_version(cfg: TokenizerConfig, config_name: str | None, data: ImageSet, train_idx: np.ndarray,
                 val_idx: np.ndarray, staging: str, shared: storage.Location, device, log) -> dict:
    """The VAE, the codebook and every image's codes built in `staging` and evaluated; the evaluation."""
    s_vae, s_out = os.path.join(staging, "vae"), os.path.join(staging, "codebook")
    given = None  # the codebook, when it is not fitted here
    if cfg.kind == "vq":
        vae, given = pretrained_vq(cfg, data, staging, log)
        vae = vae.to(device)
    elif cfg.engine == "ray":
        vae = train_vae_on_ray(cfg, data.subset(train_idx), data.subset(val_idx), staging, shared, log).to(device)
    else:
        vae = train_vae(cfg, data.subset(train_idx), data.subset(val_idx), os.path.join(s_vae, "checkpoints"),
                        device, log)
    eval_idx = val_idx[:EVAL_IMAGES]
    km, codes, eval_latents = codebook_and_codes(cfg, vae, data, train_idx, val_idx, eval_idx, staging,
                                                 shared, device, log, given)
    if given is not None:  # how far the held-out latents lie from their codes, as k-means reports it
        km.distortion = float(assign(eval_latents.reshape(-1, km.centres.shape[1]).to(device), km.centres)[1].mean())
    held_out = ImageSet(data.read(eval_idx), data.labels[eval_idx], data.num_classes, data.source)
    usage = usage_of_counts(codes.counts(len(km.centres)))  # K: the fitted codebook's, or the VQ's
    report, picture = evaluate_tokenizer(vae, km.centres.cpu(), held_out, eval_latents,
                                         codes.first("val", len(eval_idx)), usage, device)
    report |= {"images": len(data), "images_skipped": len(data.skipped)}
    write_codebook_folder(cfg, config_name, s_out, data, km, codes, train_idx, val_idx, report,
                          eval_latents.shape[1:3])
    save_png(os.path.join(s_out, PICTURE), picture)
    return report


def run_tokenize(cfg: TokenizerConfig, config_name: str | None = None, log=print) -> dict:
    """Images → VAE → codebook → codes, published together (`publish.py`); returns paths and evaluation."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.tracking.enabled:
        mlflow_runs.tracking_uri(cfg.tracking.tracking_uri, cfg.output_root)  # a URI root needs a named store
    out_root = storage.Root(cfg.output_root)  # resolved once; further in, local paths only
    out_root.check_writable("output_root")
    if cfg.kind == "vq":  # before any image is read or Ray starts
        check_vq_file(cfg.vq.checkpoint, cfg.vq.sha256)
    data, train_idx, val_idx = load_split(cfg, log)
    # a URI root (a bucket): the versions are built in this machine's mirror of it, then the
    # published folders are uploaded, the codebook's last, so a reader never finds it without its VAE
    root = out_root.local
    staging = publish.staging_dir(out_root, cfg.name)
    try:
        # engine=ray: what the workers and actors on every node read and write (in the bucket for a URI root)
        here = storage.Location(staging)
        with publish.shared_staging(out_root, staging, log) if cfg.engine == "ray" else nullcontext(here) as shared:
            report = make_version(cfg, config_name, data, train_idx, val_idx, staging, shared, device, log)
            version = publish.publish(out_root, cfg.name, staging)
    finally:
        publish.discard(out_root, staging)  # gone already when published; its lock released either way
    out_dir = os.path.join(root, "codebook", cfg.name)
    vae_path = os.path.join(root, f"vae_{cfg.name}", "checkpoints", "best.pt")
    if out_root.remote:  # the version too, never overwritten: what a run trained on stays in the bucket
        save_json(os.path.join(version, "codebook", publish.VERSION_FILE),
                  {"version": os.path.relpath(version, root)})
        out_root.push(version)
    out_root.push(os.path.join(root, f"vae_{cfg.name}"))
    # the files the pipeline and the trainer look for go last: a folder without them is not done
    out_root.push(out_dir, last=("tokenizer_config.json", "codebook.pt"))
    log(quality_line(report))
    log(f"tokenize done in {time.perf_counter() - t0:.0f} s → {out_root.public(out_dir)}/ and "
        f"{out_root.public(vae_path)} (version {version})")
    result = {"codebook_dir": out_root.public(out_dir), "vae_checkpoint": out_root.public(vae_path),
              "version_dir": version, **report}
    if cfg.tracking.enabled:
        result["mlflow_run_id"] = track_tokenizer(cfg, config_name, report, out_dir, out_root)
        log(f"MLflow run {result['mlflow_run_id']} (tokenize-{cfg.name}) in "
            f"{mlflow_runs.tracking_uri(cfg.tracking.tracking_uri, cfg.output_root)}")
    return result


def track_tokenizer(cfg: TokenizerConfig, config_name: str | None, report: dict, out_dir: str,
                    out_root: storage.Root) -> str:
    """One MLflow run per tokenizer job: config as params, the evaluation as metrics, its JSON as artifact."""
    uri = mlflow_runs.tracking_uri(cfg.tracking.tracking_uri, cfg.output_root)
    run_id = mlflow_runs.start_run(uri, cfg.tracking.experiment, out_root.local_path("mlartifacts"),
                                f"tokenize-{cfg.name}", to_dict(cfg),
                                {"stage": "tokenize", "config_name": config_name or cfg.name})
    mlflow_runs.MetricsLogger(uri, run_id)({f"tokenizer/{k}": v for k, v in report.items()}, 0)
    for name in ("tokenizer_eval.json", "split.json", PICTURE):
        mlflow_runs.log_artifact(uri, run_id, os.path.join(out_dir, name))
    mlflow_runs.finish_run(uri, run_id)
    return run_id
