"""Every image's codes until a tokenizer run writes them: in memory (engine=local), or the
shards the encoding actors wrote, read one at a time so the driver's memory does not grow
with the number of images (engine=ray)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import numpy as np

from ..core.codebook import code_counts
from ..core.io import atomic_write

SPLITS = ("train", "val")


class TokenizedCodes:
    """The codes of the training images and of the held-out ones, each a list of parts in order:
    arrays, or the paths of .npy shards."""

    def __init__(self, train: list, val: list):
        self.splits = {"train": train, "val": val}

    @classmethod
    def in_memory(cls, codes: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray) -> TokenizedCodes:
        return cls([codes[train_idx]], [codes[val_idx]])

    @classmethod
    def from_shards(cls, folder: str) -> TokenizedCodes:
        """The shards under `folder`/shards and `folder`/val_shards (`encode_actors.shard_name`)."""
        return cls(*(sorted(glob.glob(os.path.join(folder, sub, "codes-*.npy"))) for sub in ("shards", "val_shards")))

    def parts(self, split: str) -> Iterator[np.ndarray]:
        for part in self.splits[split]:
            yield np.load(part, allow_pickle=False) if isinstance(part, str) else part

    def shape(self, split: str) -> tuple[int, int]:
        """(rows, codes per row), from the shards' headers: nothing is read whole."""
        shapes = [(np.load(p, mmap_mode="r", allow_pickle=False) if isinstance(p, str) else p).shape
                  for p in self.splits[split]]
        return sum(s[0] for s in shapes), shapes[0][1]

    def first(self, split: str, n: int) -> np.ndarray:
        """The first `n` rows of `split` (the held-out images a report scores)."""
        taken, rows = [], 0
        for part in self.parts(split):
            if rows >= n:
                break
            taken.append(part[: n - rows])
            rows += len(taken[-1])
        return np.concatenate(taken)

    def counts(self, num_codes: int) -> np.ndarray:
        """How often each code 0 … num_codes-1 occurs, over both splits."""
        total = np.zeros(num_codes, dtype=np.int64)
        for split in SPLITS:
            for part in self.parts(split):
                total += code_counts(part, num_codes)
        return total

    def save(self, path: str, split: str) -> str:
        """`split`'s codes as one .npy file (int32), written part by part, whole or not at all."""
        shape = self.shape(split)

        def write(tmp):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=shape)
            row = 0
            for part in self.parts(split):
                out[row : row + len(part)] = part
                row += len(part)
            out.flush()
            del out

        return atomic_write(path, write)
