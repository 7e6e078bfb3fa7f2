"""Code files → token sequences → training examples.

One implementation of the token layout for every reader: `CodeSequenceDataset`
(single process) and the Ray Data path both call `encode_sequences` and
`make_examples`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError
from .tokens import TokenLayout

IGNORE_INDEX = -100
MAX_CLASSES = 100_000
INVALID_CODE_POLICIES = ("unk", "error", "drop")


# ---------------------------------------------------------------------------
# Loading and validating arrays


def _name(source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<array>"


def read_npy_header(f, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data the header promises) of an open .npy stream, read before
    anything is allocated, so a 64-byte file claiming a 357 TiB array is refused, not attempted."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise DataError(f"{name}: not a readable .npy file ({' '.join(str(e).split())})") from e
    if dtype.hasobject:
        raise DataError(f"{name}: holds pickled objects; refusing to load")
    return shape, dtype, math.prod(shape) * dtype.itemsize


def checked_header(path: str, what: str, f) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the open .npy file `f` at `path`, whose size must hold what its header
    promises; `f` is left at the first byte of data."""
    shape, dtype, nbytes = read_npy_header(f, path)
    available = os.fstat(f.fileno()).st_size - f.tell()
    if available < nbytes:
        raise DataError(f"{path}: the header promises a {dtype} array of shape {shape} ({nbytes} bytes) but the "
                        f"file holds {available}; truncated or forged")
    return shape, dtype


def load_array(path: str | os.PathLike, what: str) -> np.ndarray:
    """np.load without pickles, turning every failure into one clear line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} file not found")
    try:
        with open(path, "rb") as f:
            checked_header(path, what, f)
    except OSError as e:
        raise DataError(f"{path}: not a readable .npy {what} file ({e})") from e
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{path}: {what} file holds pickled objects; refusing to load") from e
        raise DataError(f"{path}: not a readable .npy {what} file ({e})") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy {what} file ({e})") from e
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
    return arr


def load_codes(source, dtype=np.int64) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(N, H*W) or (N, H, W) integer codes as `dtype` (None: the file's own, no copy) (N, H*W),
    and the grid (H, W) when the file says it; invalid codes are kept for the policy."""
    name = _name(source)
    arr = load_array(source, "codes") if isinstance(source, (str, os.PathLike)) else source
    arr = np.asarray(arr)
    grid = check_codes_shape(arr.shape, arr.dtype, name)
    arr = arr.reshape(arr.shape[0], -1)
    return (arr if dtype is None else arr.astype(dtype, copy=False)), grid


def check_codes_shape(shape: tuple[int, ...], dtype: np.dtype, name: str) -> tuple[int, int] | None:
    """Integer codes shaped (N, H*W) or (N, H, W), not empty; returns the grid (H, W) when given."""
    if dtype.hasobject or not np.issubdtype(dtype, np.integer):
        raise DataError(f"{name}: codes must be integers, got dtype {dtype}")
    if len(shape) not in (2, 3):
        raise DataError(f"{name}: codes must be shaped (N, H*W) or (N, H, W), got {shape}")
    if math.prod(shape) == 0:
        raise DataError(f"{name}: codes array is empty (shape {shape})")
    return (int(shape[1]), int(shape[2])) if len(shape) == 3 else None


def code_rows(path: str | os.PathLike) -> int:
    """The number of rows a codes .npy file holds, from its header."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return int(checked_header(path, "codes", f)[0][0])
    except (OSError, IndexError) as e:
        raise DataError(f"{path}: not a readable .npy codes file ({e})") from e


def code_chunks(path: str | os.PathLike, rows: int = 1 << 16):
    """The codes of a .npy file `rows` at a time: (first row, (n, H*W) codes in the file's own
    integer type, grid or None) — a check of a file of any size holds one chunk in memory."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: codes file not found")
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            fortran = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)[1]
            f.seek(0)
            shape, dtype = checked_header(path, "codes", f)
            grid = check_codes_shape(shape, dtype, path)
            if fortran:  # column-major: no rows to read in order; whole, as np.load reads it
                codes, grid = load_codes(path, dtype=None)
                yield 0, codes, grid
                return
            per_row = math.prod(shape[1:])
            for start in range(0, shape[0], rows):
                n = min(rows, shape[0] - start)
                yield start, np.fromfile(f, dtype=dtype, count=n * per_row).reshape(n, per_row), grid
    except DataError:
        raise  # already one line that names the file
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy codes file ({' '.join(str(e).split())})") from e


def load_labels(source, num_rows: int, num_classes: int | None = None) -> np.ndarray:
    """Labels as int64 (N,), checked against the number of code rows and classes."""
    name = _name(source)
    arr = load_array(source, "labels") if isinstance(source, (str, os.PathLike)) else source
    arr = np.asarray(arr)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: labels must be integers, got dtype {arr.dtype}")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.shape[0] != num_rows:
        raise DataError(f"{name}: expected {num_rows} labels (one per code row), got shape {arr.shape}")
    check_label_range(arr, num_classes, name)
    return arr.astype(np.int64, copy=False)


def check_label_range(labels: np.ndarray, num_classes: int | None, name: str) -> None:
    """Labels in 0..num_classes-1; with no declared count, below MAX_CLASSES (a sanity bound: one
    stray label of 10^12 would otherwise make a vocabulary of 10^12 class tokens)."""
    bound = num_classes if num_classes is not None else MAX_CLASSES
    if labels.size and (labels.min() < 0 or labels.max() >= bound):
        hi = f"..{bound - 1}"
        raise DataError(
            f"{name}: labels must lie in 0{hi}, found values {int(labels.min())}..{int(labels.max())}"
        )


def apply_invalid_code_policy(
    codes: np.ndarray, labels: np.ndarray | None, num_codes: int, policy: str, name: str = "<array>",
    first_row: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Codes outside 0..num_codes-1 → (codes, labels, count): unk keeps them (they become UNK),
    error names the file, count and first (row, position), drop drops their rows with a warning."""
    if policy not in INVALID_CODE_POLICIES:
        raise ValueError(f"invalid_codes must be one of {INVALID_CODE_POLICIES}, got {policy!r}")
    bad = (codes < 0) | (codes >= num_codes)
    count = int(bad.sum())
    if count == 0:
        return codes, labels, 0
    if policy == "error":
        row, pos = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{name}: {count} invalid codes (outside 0..{num_codes - 1}), first at row {row + first_row}, "
            f"position {pos} (value {int(codes[row, pos])})"
        )
    if policy == "drop":
        keep = ~bad.any(axis=1)
        warnings.warn(
            f"{name}: dropped {int((~keep).sum())} of {len(codes)} sequences with invalid codes",
            stacklevel=3,
        )
        if not keep.any():
            raise DataError(f"{name}: every sequence holds an invalid code; nothing left to train on")
        return codes[keep], (labels[keep] if labels is not None else None), count
    return codes, labels, count


# ---------------------------------------------------------------------------
# Sequences and examples (shared with the Ray Data path)


def encode_sequences(codes: np.ndarray, labels: np.ndarray | None, layout: TokenLayout) -> np.ndarray:
    """(N, L) codes → (N, prefix + L + 1) tokens ``[class][BOS] codes [EOS]``: invalid codes
    become UNK; a conditional layout without labels gets the null class."""
    n, length = codes.shape
    tokens = np.empty((n, layout.sequence_length(length)), dtype=np.int64)
    if layout.conditional:
        tokens[:, 0] = (
            layout.first_class_id + labels if labels is not None else layout.null_class_id
        )
    tokens[:, layout.prefix_len - 1] = layout.bos_id
    body = tokens[:, layout.prefix_len : -1]
    body[:] = codes
    body[(codes < 0) | (codes >= layout.num_codes)] = layout.unk_id
    tokens[:, -1] = layout.eos_id
    return tokens


def window_starts(num_inputs: int, seq_len: int) -> list[int]:
    """Start offsets of the training windows over `num_inputs` inputs: one window when it fits,
    else windows of `seq_len` with stride seq_len // 2, the last aligned to the end, so every
    target has at least seq_len // 2 tokens of context (but in the first window)."""
    if num_inputs <= seq_len:
        return [0]
    stride = max(1, seq_len // 2)
    starts = list(range(0, num_inputs - seq_len + 1, stride))
    if starts[-1] != num_inputs - seq_len:
        starts.append(num_inputs - seq_len)
    return starts


def make_examples(
    tokens: np.ndarray, layout: TokenLayout, seq_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences (N, T) → (input_ids, labels), each (N * windows, min(T-1, seq_len)): labels
    are the inputs shifted by one, -100 for PAD, BOS, UNK, class tokens and targets an earlier
    window scored (every target counts once)."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:].copy()
    not_scored = (targets == layout.pad_id) | (targets == layout.bos_id)
    not_scored |= (targets == layout.unk_id) | (targets >= layout.first_class_id)
    targets[not_scored] = IGNORE_INDEX
    num_inputs = inputs.shape[1]
    if seq_len is None or num_inputs <= seq_len:
        return inputs, targets
    xs, ys, scored_until = [], [], 0
    for s in window_starts(num_inputs, seq_len):
        y = targets[:, s : s + seq_len].copy()
        y[:, : max(0, scored_until - s)] = IGNORE_INDEX
        xs.append(inputs[:, s : s + seq_len])
        ys.append(y)
        scored_until = s + seq_len
    # window-major within each sequence: rows of sequence i stay together
    return np.stack(xs, 1).reshape(-1, seq_len), np.stack(ys, 1).reshape(-1, seq_len)


class CodeSequenceDataset(Dataset):
    """Integer codes (a .npy path or an array, (N, H*W) or (N, H, W)) and optional labels as
    next-token examples {input_ids, labels}. `layout` defaults from `num_codes` (else the data,
    with a warning) and the labels; `seq_len` cuts longer sequences into windows."""

    def __init__(
        self,
        codes,
        labels=None,
        layout: TokenLayout | None = None,
        invalid_codes: str = "unk",
        num_codes: int | None = None,
        num_classes: int | None = None,
        seq_len: int | None = None,
    ):
        self.source = _name(codes)
        codes_arr, self.grid_shape = load_codes(codes)
        labels_arr = load_labels(labels, len(codes_arr)) if labels is not None else None
        if layout is None:
            if num_codes is None:
                valid = codes_arr[codes_arr >= 0]
                num_codes = int(valid.max()) + 1 if valid.size else 1
                warnings.warn(
                    f"{self.source}: vocabulary size {num_codes} inferred from the data; "
                    "pass num_codes (the codebook size) to be exact",
                    stacklevel=2,
                )
            if num_classes is None and labels_arr is not None:
                num_classes = int(labels_arr.max()) + 1
            layout = TokenLayout(num_codes, num_classes or 0)
        self.layout = layout
        if labels_arr is not None:
            if not layout.conditional:
                raise DataError(f"{_name(labels)}: labels given but the layout has no classes")
            check_label_range(labels_arr, layout.num_classes, _name(labels))
        codes_arr, labels_arr, self.num_invalid = apply_invalid_code_policy(
            codes_arr, labels_arr, layout.num_codes, invalid_codes, self.source
        )
        self.num_positions = codes_arr.shape[1]
        self.codes, self.class_labels = codes_arr, labels_arr
        tokens = encode_sequences(codes_arr, labels_arr, layout)
        x, y = make_examples(tokens, layout, seq_len)
        self.input_ids, self.labels = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """All examples as two (M, T) tensors, for fast batching (`loop.IndexBatches`)."""
        return {"input_ids": self.input_ids, "labels": self.labels}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def pad_collate(
    batch: Sequence[dict[str, torch.Tensor]], pad_id: int, with_attention_mask: bool = False
) -> dict[str, torch.Tensor]:
    """Pad examples to the batch's longest at the end (input_ids `pad_id`, labels -100); with
    `with_attention_mask`, an ``attention_mask`` (1 = real token)."""
    if not batch:
        raise ValueError("pad_collate: empty batch")
    for item in batch:
        for key in ("input_ids", "labels"):
            t = item[key]
            if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.dtype.is_floating_point or t.dtype.is_complex \
                    or t.dtype == torch.bool:
                raise DataError(f"pad_collate: {key} must be 1-D integer tensors, got "
                                f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    longest = max(item["input_ids"].shape[0] for item in batch)
    input_ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for i, item in enumerate(batch):
        n = item["input_ids"].shape[0]
        input_ids[i, :n] = item["input_ids"]
        labels[i, :n] = item["labels"]
        mask[i, :n] = 1
    out = {"input_ids": input_ids, "labels": labels}
    if with_attention_mask:
        out["attention_mask"] = mask
    return out
