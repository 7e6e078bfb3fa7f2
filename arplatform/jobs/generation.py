"""Generation: a checkpoint → N images, in this process or on Ray Data actors (the generate
stage, and the training job's end-of-training samples).

    run_generate(cfg)
      1. resolve      the checkpoint, the codebook it was trained on, the VAE the codebook
                      names; each checked against the others (vocabulary, latent size, grid)
      2. plan         sample i: class (balanced, a list, or none) and its random key (seed, i)
      3. folder       <out>/ locked for this run; indices already written are skipped
      4. engine       local: ImageSampler in a loop | ray: map_batches(ImageSampler) on actors
      5. finish       samples.npz, grid.png, manifest.json
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager

import numpy as np

from ..config import GenerateConfig
from ..core.errors import ConfigError, DataError
from ..core.progress import Progress
from ..core.sampling import sample_keys
from ..outputs import sample_folder, storage
from .sampling import resolve_models


def plan_labels(cfg: GenerateConfig, num_classes: int) -> np.ndarray:
    """The class of every sample index: balanced (i mod C), cycling through a list, or -1 (none)."""
    n = cfg.num_samples
    if cfg.classes == "none" or num_classes == 0:
        if cfg.classes not in ("none", "all"):
            raise ConfigError(f"classes: {cfg.classes!r} but the checkpoint is unconditional; use none")
        return np.full(n, -1, dtype=np.int64)
    if cfg.classes == "all":
        return np.arange(n, dtype=np.int64) % num_classes
    chosen = np.array([int(c) for c in cfg.classes.split(",")], dtype=np.int64)
    if chosen.max() >= num_classes:
        raise ConfigError(f"classes: {int(chosen.max())} is not a class of the checkpoint (0..{num_classes - 1})")
    return chosen[np.arange(n) % len(chosen)]


def sampler_spec(cfg: GenerateConfig, models: dict, out: str) -> dict:
    """What every sampler (this process or an actor) receives: plain data only; the files with
    the SHA-256 of the bytes the driver checked, which are the bytes every sampler loads."""
    keys = ("transformer_ckpt", "codebook_pt", "vae_ckpt", "transformer_sha256", "codebook_sha256", "vae_sha256")
    return {k: models[k] for k in keys} | {
        "out": out, "seed": cfg.seed, "sample": models["sample"], "device": cfg.device, "threads": None,
        "format": cfg.format}


def manifest_settings(cfg: GenerateConfig, sample: dict) -> dict:
    """What a samples folder's images depend on besides the checkpoint (its manifest's
    "settings"): a folder holds one such setting."""
    sample = {k: v for k, v in sample.items() if k != "precision"}
    layout = {"format": cfg.format} if cfg.format != "png" else {}  # a folder holds one format
    return {"seed": cfg.seed, "classes": cfg.classes, **sample, **layout}


def sampling_line(sample: dict, explicit: dict) -> str:
    """The settings drawn with, those a person set marked: what a log reader needs to redo it."""
    return ", ".join(f"{k} {v}{' (given)' if k in explicit else ''}" for k, v in sample.items()) + \
        " (the checkpoint's own, its sampler.json, then what was given: jobs.sampling.resolve_sampling)"


def guided(cfg: GenerateConfig, models: dict) -> bool:
    """Whether a batch runs twice (class-conditional and unconditional rows) for guidance."""
    return models["layout"].conditional and cfg.classes != "none" and models["sample"]["cfg_scale"] != 1.0


def check_batch_memory(cfg: GenerateConfig, models: dict) -> None:
    """Refuse a --batch_size whose sampling would not fit in this machine's free memory, before
    any model is loaded for work: one line that says how much it needs and what fits."""
    from ..core.budget import available_memory_bytes, check_fits
    from ..core.sampling import sampling_memory_bytes

    free = available_memory_bytes()
    if free is None:
        return
    batch = min(cfg.batch_size, cfg.num_samples)
    need = sampling_memory_bytes(models["model_config"], batch, guided(cfg, models), models["image_pixels"])
    per_sample = max(1, need // batch)
    check_fits("batch_size", f"{batch} samples at once (KV cache, logits, decoding)", need, 0.8 * free, "memory",
               f"at most {max(1, int(0.8 * free // per_sample))} fit", where="this machine (80 % of free)")


def run_generate(cfg: GenerateConfig, log=print) -> dict:
    t0 = time.perf_counter()
    models = resolve_models(cfg)
    log(f"sampling: {sampling_line(models['sample'], cfg.sample)}")
    check_batch_memory(cfg, models)
    labels = plan_labels(cfg, models["layout"].num_classes)
    out = storage.Location(cfg.out or storage.Location(cfg.output_root).file(f"samples/{models['config_name']}"))
    manifest = {"checkpoint": models["transformer_ckpt"],
                "checkpoint_sha256": models["transformer_sha256"], "codebook_pt": models["codebook_pt"],
                "codebook_sha256": models["codebook_sha256"], "vae_ckpt": models["vae_ckpt"],
                "vae_sha256": models["vae_sha256"],
                "settings": manifest_settings(cfg, models["sample"]), "precision": models["sample"]["precision"]}
    if models["model_uri"]:
        manifest["model_uri"] = models["model_uri"]  # the MLflow model the checkpoint was downloaded from
    if out.isfile():
        raise ConfigError(f"out: {out} is a file; name a samples folder (new, or one generate wrote)")
    out.check_writable("out")
    sample_folder.check_manifest(out, manifest)
    with writer_lock(out):
        # bound before its first image: a run killed mid-way leaves this manifest, and a rerun
        # under other settings or another checkpoint is refused instead of mixing samples
        sample_folder.bind(out, manifest, cfg.num_samples)
        done = set(sample_folder.written(out)["index"].tolist())
        todo = np.array([i for i in range(cfg.num_samples) if i not in done], dtype=np.int64)
        log(f"generate {cfg.num_samples} samples into {out}: {len(done & set(range(cfg.num_samples)))} already "
            f"written, {len(todo)} to draw ({cfg.engine} engine)")
        spec = sampler_spec(cfg, models, out.path)
        nodes = []
        if len(todo):
            engine = run_local if cfg.engine == "local" else run_ray
            nodes = engine(cfg, spec, models, todo, labels[todo], log)
        manifest["nodes"] = nodes  # where this run drew its batches (Ray node ids; "local" in this process)
        keys = sample_keys(cfg.seed, np.arange(cfg.num_samples)).tolist()
        samples = [{"index": i, "class": int(labels[i]), "key": keys[i]} for i in range(cfg.num_samples)]
        written = sample_folder.finish(out, manifest, samples, fmt=cfg.format)
    seconds = time.perf_counter() - t0
    log(f"done in {seconds:.1f} s: {len(written['index'])} samples\n  folder:  {out}\n  grid:    "
        f"{out.file('grid.png')}\n  samples: {out.file('samples.npz')}")
    return {"out": out.path, "num_written": int(len(written["index"])), "drawn": int(len(todo)), "seconds": seconds}


@contextmanager
def writer_lock(folder: storage.Location):
    """One generate run writes a local folder at a time. A bucket has no locks; two runs there
    would write the same bytes (sample i depends only on (seed, i)), and `written` keeps one copy."""
    if folder.remote:
        yield
        return
    from filelock import FileLock, Timeout

    out = folder.path
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    lock = FileLock(os.path.join(out, ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DataError(f"{out}: another generate run is writing this folder") from None
    try:
        yield
    except BaseException:
        # a run refused or stopped before its first file leaves no folder behind (only its lock was there)
        if created and set(os.listdir(out)) <= {".lock", sample_folder.MANIFEST}:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.release()


def clear_samples_folder(out: str) -> None:
    """Empty a samples folder to draw it again, under its writer lock (a live writer refuses it)."""
    folder = storage.Location(out)
    if folder.remote or not os.path.isdir(folder.path):
        folder.remove_tree()
        return
    with writer_lock(folder):
        for name in os.listdir(folder.path):
            if name != ".lock":
                path = os.path.join(folder.path, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def _batches(todo: np.ndarray, labels: np.ndarray, batch_size: int):
    for s in range(0, len(todo), batch_size):
        yield {"index": todo[s : s + batch_size], "label": labels[s : s + batch_size]}


def run_local(cfg: GenerateConfig, spec: dict, models: dict, todo: np.ndarray, labels: np.ndarray,
              log) -> list[str]:
    from ..distributed.image_sampler import ImageSampler

    sampler = ImageSampler(spec)
    with Progress("generate", len(todo), "images", log) as progress:
        for batch in _batches(todo, labels, cfg.batch_size):
            progress.update(len(sampler(batch)["index"]))
    return ["local"]


def run_ray(cfg: GenerateConfig, spec: dict, models: dict, todo: np.ndarray, labels: np.ndarray,
            log) -> list[str]:
    """map_batches(ImageSampler) over a materialised dataset of (index, label) on `cfg.actors`
    actors: one GPU each where the cluster has GPUs, else `cpus_per_actor` CPUs each."""
    from ..distributed.cluster import init_ray
    from ..distributed.generate_actors import actor_memory_bytes, sample_on_actors

    memory = actor_memory_bytes(models, min(cfg.batch_size, len(todo)), guided(cfg, models))
    ray = init_ray()
    return sample_on_actors(ray, cfg, spec, todo, labels, memory, log)
