"""How good are generated images? Measured against the real dataset they imitate.

    class accuracy   a small CNN trained by the platform on the dataset's real training
                     images (its own held-out accuracy reported) reads each sample
    Fréchet distance on that CNN's penultimate features (128-d), samples vs held-out
                     real images; reference lines: the tokenizer's reconstructions of real
                     training images (what a perfect prior over codes would reach) and real
                     training images (real vs real), each as many as there are samples
    memorisation     mean pixel distance from each sample to its nearest training image,
                     over the same for held-out real images: well below 1 flags copying

Offline: the classifier is trained here (seconds on a CPU) and cached beside the outputs.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import DataError
from ..core.progress import Progress


@dataclass
class RealData:
    """The real images a sample set imitates: float32 (N, C, H, W) in [0, 1]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    num_classes: int
    recon_images: np.ndarray | None = None  # the tokenizer's reconstructions of training images
    recon_index: np.ndarray | None = None  # which training image each reconstruction is of


class Classifier(nn.Module):
    """Two conv blocks and a 128-d feature layer: about 97 % on the MNIST sample's held-out
    digits after training on its 4,500 others for a few seconds."""

    def __init__(self, channels: int, size: int, num_classes: int):
        super().__init__()
        self.config = {"channels": channels, "size": size, "num_classes": num_classes}
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(64 * (size // 4) ** 2, 128)
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(self.features(x), 0.3, self.training))


def train_classifier(real: RealData, epochs: int = 8, seed: int = 0, log=print) -> tuple[Classifier, float]:
    """Train on the real training images (random shifts of up to 2 pixels); held-out accuracy."""
    torch.manual_seed(seed)
    _, c, h, _ = real.train_images.shape
    model = Classifier(c, h, real.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.tensor(real.train_images), torch.tensor(real.train_labels)  # copies: they may be read-only
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(x) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    model.train()
    with Progress("classifier", steps, "steps", log) as progress:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(128):
                dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
                batch = torch.roll(x[idx], shifts=(dx, dy), dims=(2, 3))
                loss = F.cross_entropy(model(batch), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                progress.update()
    model.eval()
    accuracy = float((predict(model, real.val_images) == real.val_labels).mean())
    log(f"classifier: held-out accuracy {accuracy:.4f} on {len(real.val_labels)} real images")
    return model, accuracy


@torch.inference_mode()
def predict(model: Classifier, images: np.ndarray) -> np.ndarray:
    return np.concatenate([model(torch.from_numpy(b)).argmax(1).numpy() for b in _chunks(images)])


@torch.inference_mode()
def features(model: Classifier, images: np.ndarray) -> np.ndarray:
    return np.concatenate([model.features(torch.from_numpy(b)).double().numpy() for b in _chunks(images)])


def _chunks(images: np.ndarray, size: int = 512):
    """float32 batches torch can wrap: a read-only array (Ray's object store hands trials those)
    is copied, chunk by chunk, rather than warned about."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    return (images[s : s + size] if images.flags.writeable else images[s : s + size].copy()
            for s in range(0, len(images), size))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) between two feature sets (N, D)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # fewer samples than dimensions: singular, handled below
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # near-singular product: regularise, as the FID reference does
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def nearest_distance(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each query image, the L2 pixel distance to its nearest reference image."""
    return nearest(queries, references)[0]


def nearest(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the L2 pixel distance to its nearest reference image, and its index."""
    ref = torch.tensor(np.asarray(references, dtype=np.float32)).flatten(1)  # a copy: Ray hands read-only arrays
    distances, indices = [], []
    for q in _chunks(queries, 256):
        found = torch.cdist(torch.from_numpy(q).flatten(1), ref).min(1)
        distances.append(found.values.numpy())
        indices.append(found.indices.numpy())
    return np.concatenate(distances), np.concatenate(indices)


def pictures(images: np.ndarray, real: RealData, count: int = 8) -> dict[str, np.ndarray]:
    """Pictures to check by eye: `nearest`, samples above their nearest training images, and
    `reconstructions`, training images above the tokenizer's reconstructions."""
    from ..data.images import make_grid

    shown = images[:count]
    out = {"nearest": make_grid(np.concatenate([shown, real.train_images[nearest(shown, real.train_images)[1]]]),
                                columns=len(shown))}
    if real.recon_images is not None and real.recon_index is not None:
        k = min(count, len(real.recon_images))
        out["reconstructions"] = make_grid(np.concatenate([real.train_images[real.recon_index[:k]],
                                                           real.recon_images[:k]]), columns=k)
    return out


def evaluate_images(images: np.ndarray, labels: np.ndarray, real: RealData, classifier: Classifier,
                    seed: int = 0) -> dict:
    """The sample-quality report of `images` (float32 (N, C, H, W) in [0, 1]; labels -1 = none)."""
    rng = np.random.default_rng(seed)
    n = min(len(images), len(real.train_images))
    ref_idx = rng.choice(len(real.train_images), n, replace=False)
    val_feats = features(classifier, real.val_images)
    report = {"num_samples": int(len(images)),
              "frechet": {"samples": frechet_distance(features(classifier, images), val_feats),
                          "real_vs_real": frechet_distance(features(classifier, real.train_images[ref_idx]),
                                                           val_feats)}}
    if real.recon_images is not None:
        recon = real.recon_images[rng.choice(len(real.recon_images), min(n, len(real.recon_images)), replace=False)]
        report["frechet"]["tokenizer_reconstructions"] = frechet_distance(features(classifier, recon), val_feats)
        report["frechet"]["samples_over_reconstructions"] = (report["frechet"]["samples"]
                                                             / report["frechet"]["tokenizer_reconstructions"])
    conditional = labels >= 0
    if conditional.any():
        pred = predict(classifier, images[conditional])
        truth = labels[conditional]
        report["accuracy"] = float((pred == truth).mean())
        report["accuracy_per_class"] = {int(c): float((pred[truth == c] == c).mean()) for c in np.unique(truth)}
    sample_nn = nearest_distance(images, real.train_images).mean()
    val_nn = nearest_distance(real.val_images, real.train_images).mean()
    report["memorisation"] = {"sample_to_train": float(sample_nn), "heldout_to_train": float(val_nn),
                              "ratio": float(sample_nn / val_nn)}
    return report


def classifier_dir(output_root: str, data_config) -> str:
    """Where the classifier of one dataset (as the tokenizer read it) is cached."""
    import dataclasses
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(dataclasses.asdict(data_config), sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(output_root, "classifiers", f"{data_config.dataset}-{key}")


def load_or_train_classifier(cache_dir: str, real: RealData, log=print) -> tuple[Classifier, float]:
    """The cached classifier of this dataset, or a new one (trained, then cached)."""
    from ..core.io import load_torch, save_torch

    path = os.path.join(cache_dir, "classifier.pt")
    if os.path.exists(path):
        try:
            saved = load_torch(path, DataError, "file")
            model = Classifier(**saved["config"])
            model.load_state_dict(saved["state_dict"])
            accuracy = float(saved["heldout_accuracy"])
        except Exception as e:  # noqa: BLE001 - any damage (truncated, foreign, wrong shapes) is one line
            # load_torch's own line already names the file and the reason
            reason = str(e).removeprefix(f"{path}: ") if isinstance(e, DataError) else \
                f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
            raise DataError(f"{path}: a damaged or foreign cached classifier ({reason}); "
                            "delete it and evaluation trains it again") from None
        model.eval()
        log(f"classifier: cached {path} (held-out accuracy {accuracy:.4f})")
        return model, accuracy
    model, accuracy = train_classifier(real, log=log)
    save_torch(path, {"config": model.config, "state_dict": model.state_dict(), "heldout_accuracy": accuracy})
    return model, accuracy


@torch.inference_mode()
def heldout_bits_per_code(model, layout, codes: str, labels: str | None) -> float:
    """Mean negative log2-likelihood of the held-out codes under the GPT (EOS not counted)."""
    from ..core.data import IGNORE_INDEX, CodeSequenceDataset

    data = CodeSequenceDataset(codes, labels, layout, seq_len=model.config.seq_len)
    y = data.labels.clone()
    y[y == layout.eos_id] = IGNORE_INDEX
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(y), 256):
        logits = model(data.input_ids[s : s + 256]).float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[s : s + 256].reshape(-1),
                                 ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((y[s : s + 256] != IGNORE_INDEX).sum())
    return total / max(1, count) / math.log(2)
