"""The held-out split where the rows are read: the one piece of the training data path that runs
in Ray Data's read tasks. numpy only, and the package's `__init__` imports nothing: a task's
worker process imports this module, not torch (2 s of CPU for every worker it starts, which a
2-core machine felt in every streamed job's start-up)."""

from __future__ import annotations

import numpy as np


def held_out(index: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Whether each row (by index) is held out: a seeded splitmix64 hash below `fraction`. A row's
    fate needs no other row, so every task and both data paths agree."""
    with np.errstate(over="ignore"):  # the hash wraps around 2^64 on purpose
        z = index.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 < fraction


def read_part(batch: dict, seed: int, fraction: float, part: str) -> dict:
    """Ray Data map_batches over `row_chunks`: each chunk's rows, memory-mapped from its files,
    that belong to `part` (train or val, `held_out`)."""
    codes, labels = [], []
    for path, label_path, start, stop, first in zip(batch["codes"], batch["labels"], batch["start"], batch["stop"],
                                                    batch["first"], strict=True):
        rows = np.load(path, mmap_mode="r", allow_pickle=False)[start:stop]
        keep = held_out(np.arange(first, first + stop - start), seed, fraction) == (part == "val")
        codes.append(np.asarray(rows).reshape(stop - start, -1)[keep].astype(np.int64))
        if label_path:
            part_labels = np.load(label_path, mmap_mode="r", allow_pickle=False)[start:stop]
            labels.append(np.asarray(part_labels).reshape(-1)[keep].astype(np.int64))
    out = {"codes": np.concatenate(codes)}
    return out | ({"labels": np.concatenate(labels)} if labels else {})
