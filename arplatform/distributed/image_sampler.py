"""Sample images for given indices: GPT (KV cache) → codes → codebook → VAE → PNGs.

`ImageSampler(spec)` loads the GPT, the codebook and the VAE once; calling it on a
batch {"index", "label"} samples, decodes and writes that batch into the samples
folder (`sample_folder.write_batch`) and returns the batch's index and label. The
local engine calls it in a loop; the Ray engine hands the class to Ray Data's
`map_batches`, one instance per actor. `spec` is a plain dict (`jobs.generation.sampler_spec`).

Sample i draws from its own random stream keyed by (seed, i) (`core.sampling.sample_keys`),
so it is the same image whatever batch, actor or engine draws it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.budget import resolve_device
from ..core.checkpoint import load_model
from ..core.codebook import load_codebook_file
from ..core.decode import decode_codes_to_images
from ..core.sampling import Decoder, codes_from_sequences, generate_autoregressive, sample_keys, sampling_precision
from ..core.vae import load_vae
from ..data.images import to_uint8
from ..outputs import storage
from ..outputs.sample_folder import bound_precision, write_batch


def node_id() -> str:
    """The Ray node this sampler runs on ("local" outside Ray): the log says where batches were drawn."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


class ImageSampler:
    def __init__(self, spec: dict):
        self.spec = spec
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        self.device = resolve_device(spec["device"])
        # exactly the bytes the driver checked and the manifest names (a file replaced since is refused)
        with storage.Location(spec["transformer_ckpt"]).pinned(expected_sha256=spec.get("transformer_sha256")) as (
                local, _):
            self.model, self.layout, ckpt = load_model(local, map_location=self.device)
        self.positions = math.prod(ckpt["grid_shape"])
        with storage.Location(spec["codebook_pt"]).pinned(expected_sha256=spec.get("codebook_sha256")) as (local, _):
            self.codebook = load_codebook_file(local)
        with storage.Location(spec["vae_ckpt"]).pinned(expected_sha256=spec.get("vae_sha256")) as (local, _):
            self.vae = load_vae(local, map_location=self.device)
        # the samples folder, named once in this process (none for an MLflow model: it returns its images)
        self.out = storage.Location(spec["out"]) if spec.get("out") else None
        requested = spec["sample"]["precision"]

        def decide() -> str:
            return sampling_precision(self.model, self.layout, requested, self.device).precision

        self.precision = bound_precision(self.out, requested, decide) if self.out else decide()
        # one decoder for every batch: on a GPU its compiled step (a CUDA graph) is captured once
        self.decoder = Decoder(self.model, "compiled" if self.device.type == "cuda" else "eager")
        self.node = node_id()

    def __call__(self, batch: dict) -> dict:
        """Draw a batch of (index, label) rows into the samples folder `spec["out"]`."""
        index = np.asarray(batch["index"], dtype=np.int64)
        labels = np.asarray(batch["label"], dtype=np.int64)
        codes, images = self.draw(index, labels, self.spec["seed"])
        write_batch(self.out, index, labels, codes, images, self.spec.get("format", "png"))
        return {"index": index, "label": labels, "node": np.full(len(index), self.node)}

    def draw(self, index: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples `index` of `seed` (class `labels`, -1 for none): their codes and (B, H, W, C) uint8 images."""
        codes = draw_codes(self.model, self.layout, self.positions, index, labels, seed, self.spec["sample"],
                           self.precision, self.decoder)
        return codes, to_uint8(decode_codes_to_images(codes, self.codebook, self.vae).numpy())


def draw_codes(model, layout, positions: int, index: np.ndarray, labels: np.ndarray, seed: int, sample: dict,
               precision: str, decoder: Decoder | None = None) -> np.ndarray:
    """The codes of samples `index` of `seed` (class `labels`, -1 for none): sample i from its own
    random stream (seed, i), with the settings `sample` (`jobs.sampling.resolve_sampling`)."""
    device = next(model.parameters()).device
    conditional = layout.conditional and (labels >= 0).all()
    seqs = generate_autoregressive(
        model, layout, positions, num_samples=len(index),
        class_labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)) if conditional else None,
        temperature=sample["temperature"], top_k=sample["top_k"], top_p=sample["top_p"],
        cfg_scale=sample["cfg_scale"], cfg_schedule=sample["cfg_schedule"], precision=precision,
        sample_keys=sample_keys(seed, np.asarray(index, dtype=np.int64)).to(device), decoder=decoder)
    return codes_from_sequences(seqs, layout).cpu().numpy()
