"""Code datasets for Ray Train: resolve the files, check them on the driver, read them
through Ray Data and tokenise them with the core's `encode_sequences`/`make_examples`
(the same code `CodeSequenceDataset` runs)."""

from __future__ import annotations

import glob
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import CodeDataConfig
from ..core.codebook import load_codebook_file
from ..core.data import (
    apply_invalid_code_policy,
    check_label_range,
    encode_sequences,
    load_codes,
    load_labels,
    make_examples,
    pad_collate,
)
from ..core.errors import DataError
from ..core.tokens import TokenLayout


@dataclass
class CodeFiles:
    codes: list[str]
    labels: list[str] | None
    val_codes: list[str] | None
    val_labels: list[str] | None
    codebook: str | None


def _files(path: str | None, prefix: str) -> list[str] | None:
    """A .npy file, or a folder: its `<prefix>-*.npy` shards, else every .npy in it."""
    if path is None:
        return None
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, f"{prefix}-*.npy"))) or sorted(
            glob.glob(os.path.join(path, "*.npy")))
        if not found:
            raise DataError(f"{path}: no .npy files in this folder")
        return [os.path.abspath(f) for f in found]
    if not os.path.exists(path):
        raise DataError(f"{path}: {prefix} file not found")
    return [os.path.abspath(path)]


def resolve_files(cfg: CodeDataConfig) -> CodeFiles:
    if cfg.codebook_dir:
        d = cfg.codebook_dir
        if not os.path.isdir(d):
            raise DataError(f"{d}: tokenizer output folder not found (run arplatform.tokenize first)")
        shards = os.path.join(d, "shards")
        has_shards = bool(glob.glob(os.path.join(shards, "codes-*.npy")))
        pick = lambda name: os.path.join(d, name) if os.path.exists(os.path.join(d, name)) else None  # noqa: E731
        codes = cfg.codes or (shards if has_shards else os.path.join(d, "codes.npy"))
        labels = cfg.labels or (shards if has_shards and glob.glob(os.path.join(shards, "labels-*.npy"))
                                else pick("labels.npy"))
        return CodeFiles(_files(codes, "codes"), _files(labels, "labels"),
                         _files(cfg.val_codes or pick("val_codes.npy"), "codes"),
                         _files(cfg.val_labels or pick("val_labels.npy"), "labels"),
                         cfg.codebook or pick("codebook.pt"))
    return CodeFiles(_files(cfg.codes, "codes"), _files(cfg.labels, "labels"), _files(cfg.val_codes, "codes"),
                     _files(cfg.val_labels, "labels"), cfg.codebook)


@dataclass
class Preflight:
    layout: TokenLayout
    grid_shape: tuple[int, int] | None
    num_positions: int


def preflight(cfg: CodeDataConfig, files: CodeFiles) -> Preflight:
    """Read every file on the driver and refuse bad data before any worker starts, so Ray
    never burns its retries replaying a bad batch."""
    if files.labels and len(files.labels) != len(files.codes):
        raise DataError(f"{len(files.codes)} code files but {len(files.labels)} label files")
    num_codes, num_classes, grid = cfg.num_codes, cfg.num_classes, None
    if files.codebook:
        cb = load_codebook_file(files.codebook)
        num_codes = cb["z_medoid"].shape[0]
        if num_classes is None and cb.get("config", {}).get("num_classes") is not None:
            num_classes = int(cb["config"]["num_classes"])
        if cb.get("config", {}).get("grid"):
            grid = tuple(cb["config"]["grid"])
    groups = [(files.codes, files.labels)]
    if files.val_codes:
        groups.append((files.val_codes, files.val_labels))
    arrays = []  # (codes path, codes, labels, labels path)
    for code_files, label_files in groups:
        for i, path in enumerate(code_files):
            codes, g = load_codes(path)
            grid = grid or g
            labels, label_path = None, label_files[i] if label_files else None
            if label_path:
                labels = load_labels(label_path, len(codes), num_classes)
            arrays.append((path, codes, labels, label_path))
    lengths = {a[1].shape[1] for a in arrays}
    if len(lengths) > 1:
        raise DataError(f"code files disagree on positions per image: {sorted(lengths)}")
    if num_codes is None:
        valid = [a[1][a[1] >= 0] for a in arrays]
        num_codes = int(max(v.max() for v in valid if v.size)) + 1
        warnings.warn(f"vocabulary size {num_codes} inferred from the data; give data.codebook or "
                      "data.num_codes to be exact", stacklevel=2)
    if num_classes is None:
        has_labels = [a[2] for a in arrays if a[2] is not None]
        num_classes = int(max(y.max() for y in has_labels)) + 1 if has_labels else 0
    invalid = 0
    for path, codes, labels, label_path in arrays:
        if labels is not None:
            check_label_range(labels, num_classes, label_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the workers' counts are reported once, below
            invalid += apply_invalid_code_policy(codes, labels, num_codes, cfg.invalid_codes, path)[2]
    if invalid and cfg.invalid_codes != "error":
        warnings.warn(f"{invalid} invalid codes handled by policy {cfg.invalid_codes!r}", stacklevel=2)
    positions = lengths.pop()
    if grid is None:  # flat codes: a square grid when the count is a square
        side = math.isqrt(positions)
        grid = (side, side) if side * side == positions else (1, positions)
    return Preflight(TokenLayout(num_codes, num_classes), tuple(grid), positions)


def tokenize_batch(batch: dict, layout: dict, seq_len: int | None, policy: str) -> dict:
    """Ray Data map_batches: rows of codes (and labels) → training examples."""
    layout = TokenLayout.from_dict(layout)
    codes = np.asarray(batch["codes"])
    codes = codes.reshape(len(codes), -1).astype(np.int64)
    labels = np.asarray(batch["labels"]).astype(np.int64).reshape(-1) if "labels" in batch else None
    with warnings.catch_warnings():  # the driver's pre-flight already reported the counts once
        warnings.simplefilter("ignore")
        codes, labels, _ = apply_invalid_code_policy(codes, labels, layout.num_codes, policy)
    x, y = make_examples(encode_sequences(codes, labels, layout), layout, seq_len)
    return {"input_ids": x, "labels": y}


def read_codes(code_files: list[str], label_files: list[str] | None):
    import ray.data

    ds = ray.data.read_numpy(code_files).rename_columns({"data": "codes"})
    if label_files:
        ds = ds.zip(ray.data.read_numpy(label_files).rename_columns({"data": "labels"}))
    return ds


def build_datasets(files: CodeFiles, pre: Preflight, cfg: CodeDataConfig, seq_len: int | None, seed: int):
    """Materialised train and validation datasets of examples.

    Materialising on the driver runs the read tasks before the workers take their
    CPUs (a lazy read_numpy under whole-CPU workers deadlocks on small machines).
    """
    kwargs = {"layout": pre.layout.to_dict(), "seq_len": seq_len, "policy": cfg.invalid_codes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = read_codes(files.codes, files.labels)
        if files.val_codes:
            val = read_codes(files.val_codes, files.val_labels)
        else:
            train, val = train.materialize().train_test_split(test_size=cfg.val_fraction, shuffle=True, seed=seed)
        train = train.map_batches(tokenize_batch, fn_kwargs=kwargs, batch_format="numpy").materialize()
        val = val.map_batches(tokenize_batch, fn_kwargs=kwargs, batch_format="numpy").materialize()
    return train, val


def pad_collate_numpy(pad_id: int):
    """A Ray Data collate_fn (NumpyBatchCollateFn) that batches rows with the core's `pad_collate`."""
    import torch
    from ray.data.collate_fn import NumpyBatchCollateFn

    class PadCollate(NumpyBatchCollateFn):
        def __call__(self, batch):
            rows = [{"input_ids": torch.tensor(x), "labels": torch.tensor(y)}
                    for x, y in zip(batch["input_ids"], batch["labels"], strict=True)]
            return pad_collate(rows, pad_id)

    return PadCollate()
