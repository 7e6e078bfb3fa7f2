"""Code datasets for Ray Train: resolve the files, check them on the driver (`preflight`),
read the rows (`build_rows`: held whole in the object store for small data, streamed by Ray
Data otherwise), and, inside each worker, turn its share of the rows into training examples
with the core's `encode_sequences`/`make_examples` (the code `CodeSequenceDataset` runs) for
the worker's own `seq_len` (`worker_batches`)."""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import CodeDataConfig
from ..config.train_plan import DataFacts
from ..core.codebook import load_codebook_file
from ..core.data import (
    MAX_CLASSES,
    apply_invalid_code_policy,
    code_chunks,
    code_rows,
    encode_sequences,
    load_array,
    load_codes,
    load_labels,
    make_examples,
)
from ..core.errors import ConfigError, DataError
from ..core.tokens import TokenLayout
from .row_split import held_out, read_part

UNBOUNDED = np.iinfo(np.int64).max  # a vocabulary not known yet: no code is too large


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
    if not cfg.codebook_dir and not cfg.codes:
        raise ConfigError("data: give data.codebook_dir (a tokenizer output folder) or data.codes")
    if cfg.codebook_dir:
        # the real folder: a tokenizer run that publishes meanwhile cannot swap files under this job
        d = os.path.realpath(cfg.codebook_dir)
        if not os.path.isdir(d):
            raise DataError(f"{d}: tokenizer output folder not found (run arplatform tokenize first)")
        shards = os.path.join(d, "shards")
        has_shards = bool(glob.glob(os.path.join(shards, "codes-*.npy")))
        pick = lambda name: os.path.join(d, name) if os.path.exists(os.path.join(d, name)) else None  # noqa: E731
        codes = cfg.codes or (shards if has_shards else os.path.join(d, "codes.npy"))
        labels = cfg.labels or (shards if has_shards and glob.glob(os.path.join(shards, "labels-*.npy"))
                                else pick("labels.npy"))
        return CodeFiles(_files(codes, "codes"), _files(labels, "labels"),
                         _files(cfg.val_codes or pick("val_codes.npy"), "codes"),
                         _files(cfg.val_labels or pick("val_labels.npy"), "labels"),
                         _absolute(cfg.codebook) or pick("codebook.pt"))
    return CodeFiles(_files(cfg.codes, "codes"), _files(cfg.labels, "labels"), _files(cfg.val_codes, "codes"),
                     _files(cfg.val_labels, "labels"), _absolute(cfg.codebook))


def _absolute(path: str | None) -> str | None:
    return os.path.realpath(path) if path else None  # (through links: the version a run names, pinned)


def preflight(cfg: CodeDataConfig, files: CodeFiles) -> DataFacts:
    """Check every file on the driver, one at a time, and refuse bad data before any worker
    starts, so Ray never burns its retries replaying a bad batch."""
    if files.labels and len(files.labels) != len(files.codes):
        raise DataError(f"{len(files.codes)} code files but {len(files.labels)} label files")
    num_codes, num_classes, grid = cfg.num_codes, cfg.num_classes, None
    if files.codebook:
        cb = load_codebook_file(files.codebook)
        num_codes = cb["z_medoid"].shape[0]
        if num_classes is None and cb.get("config", {}).get("num_classes") is not None:
            num_classes = int(cb["config"]["num_classes"])
            if not 0 <= num_classes <= MAX_CLASSES:  # before any allocation sized by it
                raise DataError(f"{files.codebook}: its config names {num_classes} classes; "
                                f"at most {MAX_CLASSES} are allowed")
        if cb.get("config", {}).get("grid"):
            grid = tuple(cb["config"]["grid"])
    groups = [(files.codes, files.labels)]
    if files.val_codes:
        groups.append((files.val_codes, files.val_labels))
    pairs = [(path, labels[i] if labels else None) for codes, labels in groups for i, path in enumerate(codes)]
    # a chunk of one file at a time, nothing kept: the driver's memory does not grow with the data.
    # With the vocabulary still unknown, only negative codes can be invalid; it is inferred after.
    lengths, highest, highest_label, invalid = set(), -1, -1, 0
    for path, label_path in pairs:
        labels = None
        for start, codes, g in code_chunks(path):
            grid = grid or g
            lengths.add(codes.shape[1])
            if start == 0 and label_path:
                rows = code_rows(path)
                labels = load_labels(label_path, rows, num_classes)
                highest_label = max(highest_label, int(labels.max()) if labels.size else -1)
            highest = max(highest, int(codes.max()))  # (negative codes are invalid, never the highest valid)
            part = None if labels is None else labels[start : start + len(codes)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the count is reported once, below
                invalid += apply_invalid_code_policy(codes, part, num_codes or UNBOUNDED, cfg.invalid_codes, path,
                                                     first_row=start)[2]
    if len(lengths) > 1:
        raise DataError(f"code files disagree on positions per image: {sorted(lengths)}")
    if num_codes is None:
        if highest < 0:
            raise DataError(f"{files.codes[0]}: no valid code in the code files; give data.num_codes")
        num_codes = highest + 1
        warnings.warn(f"vocabulary size {num_codes} inferred from the data; give data.codebook or "
                      "data.num_codes to be exact", stacklevel=2)
    if num_classes is None:
        num_classes = highest_label + 1
    if invalid and cfg.invalid_codes != "error":
        warnings.warn(f"{invalid} invalid codes handled by policy {cfg.invalid_codes!r}", stacklevel=2)
    positions = lengths.pop()
    if grid is None:  # flat codes: a square grid when the count is a square
        side = math.isqrt(positions)
        grid = (side, side) if side * side == positions else (1, positions)
    return DataFacts(TokenLayout(num_codes, num_classes), tuple(grid), positions, codebook_pt=files.codebook)


def _rows(batch: dict) -> tuple[np.ndarray, np.ndarray | None]:
    codes = np.asarray(batch["codes"])
    codes = codes.reshape(len(codes), -1).astype(np.int64)
    labels = np.asarray(batch["labels"]).astype(np.int64).reshape(-1) if "labels" in batch else None
    return codes, labels


def apply_policy(batch: dict, num_codes: int, policy: str) -> dict:
    """Ray Data map_batches on the driver: the invalid-code policy over rows (`drop` removes rows)."""
    codes, labels = _rows(batch)
    with warnings.catch_warnings():  # the driver's pre-flight already reported the counts once
        warnings.simplefilter("ignore")
        codes, labels, _ = apply_invalid_code_policy(codes, labels, num_codes, policy)
    return {"codes": codes} | ({"labels": labels} if labels is not None else {})


def tokenize_rows(batch: dict, layout: TokenLayout, seq_len: int | None) -> dict:
    """Rows of codes (and labels) → training examples ``input_ids``/``labels`` of `seq_len` inputs.
    Invalid codes still in the rows become UNK (`encode_sequences`)."""
    codes, labels = _rows(batch)
    x, y = make_examples(encode_sequences(codes, labels, layout), layout, seq_len)
    return {"input_ids": x, "labels": y}


def read_codes(code_files: list[str], label_files: list[str] | None):
    import ray.data

    ds = ray.data.read_numpy(code_files).rename_columns({"data": "codes"})
    if label_files:
        ds = ds.zip(ray.data.read_numpy(label_files).rename_columns({"data": "labels"}))
    return ds


# data.materialize=auto holds the rows (as int64, labels too) when they take at most this share of
# Ray's object store: 10^6 rows of 64 codes (512 MiB) on a 24 GiB machine, not 10^7
HELD_ROWS_STORE_SHARE = 0.25
# held rows of code files up to this size are read by the driver itself (`hold_rows`)
DRIVER_READ_MAX_BYTES = 8 * 2**20


@dataclass
class HeldRows:
    """Rows held whole in Ray's object store (`data.materialize`): each worker takes its share
    with `ray.get`, so a small job starts without Ray Data's actors and read tasks."""

    codes: object  # an ObjectRef of the int64 (N, positions) codes
    labels: object | None  # an ObjectRef of the int64 (N,) labels, or None
    count: int

    def to_dict(self) -> dict:
        return {"codes": self.codes, "labels": self.labels}


def holds_rows(cfg: CodeDataConfig, files: CodeFiles, facts: DataFacts) -> bool:
    """`data.materialize`; auto: whether the rows (by the files' headers) fit a quarter of the
    object store. Held rows start sooner and train faster (no Ray Data iterator)."""
    if cfg.materialize != "auto":
        return cfg.materialize
    import ray

    from ..core.data import code_rows

    rows = sum(code_rows(p) for p in files.codes + (files.val_codes or []))
    store = ray.cluster_resources().get("object_store_memory", 0)
    return rows * (facts.num_positions + 1) * 8 <= HELD_ROWS_STORE_SHARE * store


def build_rows(files: CodeFiles, facts: DataFacts, cfg: CodeDataConfig, seed: int):
    """Train and validation rows (the policy applied) as `HeldRows` or Ray datasets, and the facts
    with their row counts; rows, not windows (each job's `seq_len` cuts its own)."""
    train, val = (hold_rows if holds_rows(cfg, files, facts) else stream_rows)(files, facts, cfg, seed)
    n_train, n_val = (r.count if isinstance(r, HeldRows) else r.count() for r in (train, val))
    if n_val == 0:
        raise DataError("the validation split is empty: give val_codes or raise data.val_fraction")
    return train, val, dataclasses.replace(facts, num_train=n_train, num_val=n_val)


def hold_rows(files: CodeFiles, facts: DataFacts, cfg: CodeDataConfig, seed: int) -> tuple[HeldRows, HeldRows]:
    """Every row read once into the object store: in a Ray task beyond DRIVER_READ_MAX_BYTES (the
    driver's memory does not grow), else here (a task's start costs more than the read)."""
    import ray

    if sum(os.path.getsize(p) for p in files.codes + (files.val_codes or [])) <= DRIVER_READ_MAX_BYTES:
        *parts, (n_train, n_val) = held_parts(files, facts, cfg.val_fraction, cfg.invalid_codes, seed)
        refs = [None if part is None else ray.put(part) for part in parts]
        return HeldRows(refs[0], refs[1], n_train), HeldRows(refs[2], refs[3], n_val)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on the driver's node (a file fetched from a bucket is in its cache); no CPU of its own, so
    # it reads while Ray Train starts its workers, whose first `ray.get` waits for the rows
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(num_returns=5)(held_parts).options(num_cpus=0, scheduling_strategy=here)
    *parts, counts = task.remote(files, facts, cfg.val_fraction, cfg.invalid_codes, seed)
    n_train, n_val = row_counts(files, cfg.val_fraction, seed) if cfg.invalid_codes != "drop" else ray.get(counts)
    return HeldRows(parts[0], parts[1], n_train), HeldRows(parts[2], parts[3], n_val)


def row_counts(files: CodeFiles, val_fraction: float, seed: int, chunk: int = 1 << 20) -> tuple[int, int]:
    """(train rows, val rows) from the headers and `held_out` alone, without reading a row."""
    from ..core.data import code_rows

    rows = sum(code_rows(p) for p in files.codes)
    if files.val_codes:
        return rows, sum(code_rows(p) for p in files.val_codes)
    val = sum(int(held_out(np.arange(a, min(rows, a + chunk)), seed, val_fraction).sum())
              for a in range(0, rows, chunk))
    return rows - val, val


def held_parts(files: CodeFiles, facts: DataFacts, val_fraction: float, invalid_codes: str, seed: int):
    """(train codes, labels, val codes, labels, (train rows, val rows)) in `hold_rows`' task."""
    train = read_rows(files.codes, files.labels, facts)
    if files.val_codes:
        val = read_rows(files.val_codes, files.val_labels, facts)
    else:  # the rows `stream_rows` would hold out, in the same order
        out = held_out(np.arange(len(train[0])), seed, val_fraction)
        val, train = ([None if a is None else a[part] for a in train] for part in (out, ~out))
    if invalid_codes == "drop":
        with warnings.catch_warnings():  # the driver's pre-flight already reported the counts once
            warnings.simplefilter("ignore")
            train, val = (apply_invalid_code_policy(*part, facts.layout.num_codes, "drop")[:2]
                          for part in (train, val))
    return (*train, *val, (len(train[0]), len(val[0])))


def read_rows(code_files: list[str], label_files: list[str] | None, facts: DataFacts):
    """(int64 codes (N, positions), int64 labels or None) of the files, concatenated."""
    codes = np.concatenate([load_codes(p)[0] for p in code_files]).reshape(-1, facts.num_positions)
    labels = np.concatenate([load_array(p, "labels").reshape(-1) for p in label_files]).astype(np.int64) \
        if label_files else None
    return codes.astype(np.int64, copy=False), labels


def stream_rows(files: CodeFiles, facts: DataFacts, cfg: CodeDataConfig, seed: int):
    """Materialised Ray datasets of the rows: the reads run before the workers take their CPUs
    (a lazy read under whole-CPU workers deadlocks on small machines)."""
    kwargs = {"num_codes": facts.layout.num_codes, "policy": cfg.invalid_codes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if files.val_codes:
            train, val = read_codes(files.codes, files.labels), read_codes(files.val_codes, files.val_labels)
        else:  # held out where the rows are read: no pass over every row on the driver
            train, val = (split_part(files, cfg.val_fraction, seed, part) for part in ("train", "val"))
        if cfg.invalid_codes == "drop":
            train = train.map_batches(apply_policy, fn_kwargs=kwargs, batch_format="numpy")
            val = val.map_batches(apply_policy, fn_kwargs=kwargs, batch_format="numpy")
        return train.materialize(), val.materialize()


CHUNK_ROWS = 1 << 16  # rows one read task takes from a file


def row_chunks(files: CodeFiles) -> list[dict]:
    """The code files cut into chunks of rows, from their headers alone: what each read task reads,
    and the index of its first row among all the files' rows."""
    from ..core.data import code_rows

    chunks, first = [], 0
    for i, path in enumerate(files.codes):
        rows = code_rows(path)
        for start in range(0, rows, CHUNK_ROWS):
            chunks.append({"codes": path, "labels": files.labels[i] if files.labels else "", "start": start,
                           "stop": min(rows, start + CHUNK_ROWS), "first": first + start})
        first += rows
    return chunks


def split_part(files: CodeFiles, fraction: float, seed: int, part: str):
    """One part of the held-out split of `files` as a Ray dataset, read and split in Ray Data tasks."""
    import ray.data

    chunks = row_chunks(files)
    return ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        read_part, batch_size=1, fn_kwargs={"seed": seed, "fraction": fraction, "part": part},
        batch_format="numpy")


def worker_batches(held: dict, layout: TokenLayout, seq_len: int, batch_size: int, seed: int, rank: int,
                   world: int):
    """A worker's training batches (a callable of epoch and skip) and validation batches (a
    callable, read once): from the held rows the config carries, else its Ray Data shards."""
    import ray.train

    if "train" in held:
        train = HeldBatches(held["train"], layout, seq_len, batch_size, seed, rank, world)
    else:
        train = ShardBatches(ray.train.get_dataset_shard("train"), layout, seq_len, batch_size, seed, rank)
    cache = []

    def val() -> list:
        if not cache:
            if "val" in held:
                x, y = held_examples(held["val"], layout, seq_len, rank, world)
                cache.extend(as_tensors(x[s: s + 256], y[s: s + 256]) for s in range(0, len(x), 256))
            else:
                cache.extend(val_batches(ray.train.get_dataset_shard("val"), layout, seq_len))
        return cache

    return train, val


def held_examples(rows: dict, layout: TokenLayout, seq_len: int, rank: int, world: int):
    """This rank's equal share of held rows (every world-th row: Ray's split is equal too) as examples."""
    import ray

    codes = ray.get(rows["codes"])
    share = slice(rank, rank + len(codes) // world * world, world)
    batch = {"codes": codes[share]} | ({} if rows["labels"] is None else {"labels": ray.get(rows["labels"])[share]})
    ex = tokenize_rows(batch, layout, seq_len)
    return ex["input_ids"], ex["labels"]


class HeldBatches:
    """`ShardBatches` for held rows: a worker's examples, in a fresh seeded order each epoch;
    `skip` drops the first micro-batches of an epoch when a run resumes inside it."""

    def __init__(self, rows: dict, layout: TokenLayout, seq_len: int, batch_size: int, seed: int, rank: int,
                 world: int):
        self.x, self.y = held_examples(rows, layout, seq_len, rank, world)
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    def __call__(self, epoch: int = 0, skip: int = 0):
        order = np.random.default_rng((self.seed, epoch, self.rank)).permutation(len(self.x))
        b = self.batch_size
        for i in range(skip, len(order) // b):
            pick = order[i * b : (i + 1) * b]
            yield as_tensors(self.x[pick], self.y[pick])


class ShardBatches:
    """A worker's micro-batches of `batch_size` examples: its shard's rows shuffled (seeded by
    epoch and rank), cut into windows, re-batched; `skip` resumes inside an epoch."""

    def __init__(self, shard, layout: TokenLayout, seq_len: int, batch_size: int, seed: int, rank: int):
        self.shard, self.layout, self.seq_len = shard, layout, seq_len
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    def __call__(self, epoch: int = 0, skip: int = 0):
        rows = self.shard.iter_batches(batch_size=self.batch_size, batch_format="numpy",
                                       local_shuffle_buffer_size=8 * self.batch_size,
                                       local_shuffle_seed=self.seed * 1000 + epoch * 10 + self.rank)
        pending_x, pending_y, index = [], [], 0
        for batch in rows:
            ex = tokenize_rows(batch, self.layout, self.seq_len)
            pending_x.append(ex["input_ids"])
            pending_y.append(ex["labels"])
            x, y = np.concatenate(pending_x), np.concatenate(pending_y)
            full = len(x) // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                if index >= skip:
                    yield as_tensors(x[s : s + self.batch_size], y[s : s + self.batch_size])
                index += 1
            pending_x, pending_y = [x[full:]], [y[full:]]


def val_batches(shard, layout: TokenLayout, seq_len: int, batch_size: int = 256) -> list:
    """The worker's held-out shard as example batches, read once (it is small and fixed)."""
    return [as_tensors(**tokenize_rows(batch, layout, seq_len))
            for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy")]


def as_tensors(input_ids: np.ndarray, labels: np.ndarray) -> dict:
    """Example arrays → a batch for the loop (copies: Ray's arrays are read-only views)."""
    import torch

    return {"input_ids": torch.from_numpy(input_ids.copy()), "labels": torch.from_numpy(labels.copy())}
