"""Encoding on Ray Data: actors that each load the VAE and codebook once write their chunk's
code shards straight into the staging folder (in the bucket when there are several nodes).

Chunks of `CHUNK` images from index 0, as the local engine encodes, so both give the same
codes: chunk c's training rows go to `shards/codes-<c>.npy` (+ labels), held-out rows to
`val_shards/`. Images reach the actors through the object store, a folder's as paths."""

from __future__ import annotations

import io

import numpy as np

from ..core.progress import Progress
from .image_source import ImageReader

CHUNK = 512  # images per encoder call: jobs.tokenizer_quality.encode_means uses the same


def shard_name(kind: str, chunk: int) -> str:
    return f"{kind}-{chunk:05d}.npy"


class ShardEncoder:
    """A Ray Data actor: chunk starts in, its train and held-out code shards written, row counts out."""

    def __init__(self, spec: dict):
        import ray
        import torch

        from ..core.budget import resolve_device
        from ..core.codebook import load_codebook_file
        from ..core.vae import load_vae
        from ..outputs import storage

        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        self.spec, self.device = spec, resolve_device(spec["device"])
        self.vae = load_vae(storage.Location(spec["vae_ckpt"]).fetch(), map_location=self.device)
        self.centres = load_codebook_file(storage.Location(spec["codebook_pt"]).fetch())["z_medoid"].to(self.device)
        self.out = storage.Location(spec["out"])
        self.images = ImageReader(spec["images"])  # an array in the object store, or files decoded here
        self.labels, self.is_val = ray.get(spec["labels"]), ray.get(spec["is_val"])

    def __call__(self, batch: dict) -> dict:
        import torch

        from ..core.codebook import assign

        rows = []
        for chunk in batch["chunk"].tolist():
            start = chunk * CHUNK
            images = self.images.read(np.arange(start, min(start + CHUNK, len(self.images))))
            with torch.inference_mode():
                mu = self.vae.latents(torch.from_numpy(images).to(self.device))
            latents = mu.permute(0, 2, 3, 1).float()
            n, h, w, d = latents.shape
            codes = assign(latents.reshape(-1, d), self.centres)[0].reshape(n, h * w).cpu().numpy().astype(np.int32)
            val = self.is_val[start : start + CHUNK]
            labels = self.labels[start : start + CHUNK].astype(np.int64)
            for folder, keep in (("shards", ~val), ("val_shards", val)):
                for kind, array in (("codes", codes[keep]), ("labels", labels[keep])):
                    self.out.write_bytes(f"{folder}/{shard_name(kind, chunk)}", npy(array))
            rows.append(n)
        return {"chunk": batch["chunk"], "rows": np.array(rows)}


def npy(array: np.ndarray) -> bytes:
    """The .npy file of `array`, whole (a file is written at once: a rename, or one PUT)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_on_actors(ray, cfg, spec: dict, num_images: int, memory_per_actor: int, log) -> None:
    """Every image of `spec["images"]` encoded into shards under `spec["out"]` by `cfg.actors` actors."""
    import ray.data

    from .generate_actors import actor_resources

    resources = actor_resources(ray, cfg, memory_per_actor)
    spec = dict(spec, threads=max(1, int(resources.get("num_cpus", 1))),
                device="cuda" if "num_gpus" in resources else "cpu")
    chunks = -(-num_images // CHUNK)
    rows = ray.data.from_items([{"chunk": c} for c in range(chunks)], override_num_blocks=min(chunks, 4 * cfg.actors))
    out = rows.map_batches(ShardEncoder, fn_constructor_kwargs={"spec": spec}, batch_size=1, batch_format="numpy",
                           compute=ray.data.ActorPoolStrategy(size=cfg.actors), **resources)
    where = "GPU" if "num_gpus" in resources else f"{resources['num_cpus']:g} CPU"
    log(f"  encode: {cfg.actors} actor(s), {where} each, {chunks} chunks of {CHUNK} images")
    with Progress("encode", num_images, "images", log) as progress:
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            progress.update(int(batch["rows"].sum()))
    if progress.done != num_images:
        from ..core.errors import GenerationError

        raise GenerationError(f"encode: {progress.done} of {num_images} images came back; nothing was published")
