import os

import numpy as np
import pytest
import torch

from arplatform import CodeSequenceDataset, DataError, TokenLayout, pad_collate
from arplatform.core.data import window_starts


def test_token_layout_ids():
    layout = TokenLayout(num_codes=256, num_classes=10)
    assert (layout.pad_id, layout.bos_id, layout.eos_id, layout.unk_id) == (256, 257, 258, 259)
    assert layout.class_id(0) == 260 and layout.class_id(9) == 269
    assert layout.null_class_id == 270
    assert layout.vocab_size == 271
    assert layout.prefix_len == 2 and layout.sequence_length(49) == 52
    uncond = TokenLayout(16)
    assert uncond.vocab_size == 20 and uncond.prefix_len == 1
    with pytest.raises(ValueError):
        _ = uncond.null_class_id
    assert TokenLayout.from_dict(layout.to_dict()) == layout


def test_dataset_sequences_and_labels(tiny_codes):
    codes_path, labels_path = tiny_codes
    ds = CodeSequenceDataset(codes_path, labels_path, layout=TokenLayout(16, 3))
    codes, labels = np.load(codes_path), np.load(labels_path)
    item = ds[5]
    x, y = item["input_ids"], item["labels"]
    L = ds.layout
    assert x.dtype == torch.long and x.shape == (18,)  # [class][BOS] 16 codes (EOS is only a target)
    assert x[0] == L.class_id(int(labels[5])) and x[1] == L.bos_id
    assert x[2:].tolist() == codes[5].tolist()
    assert y[0] == -100  # target BOS is a conditioning token
    assert y[1:17].tolist() == codes[5].tolist()
    assert y[17] == L.eos_id
    assert ds.grid_shape is None and len(ds) == 100


def test_dataset_accepts_3d_codes_and_infers_vocab_with_warning(tmp_path, rng):
    codes = rng.integers(0, 10, size=(8, 3, 3))
    np.save(tmp_path / "c.npy", codes)
    with pytest.warns(UserWarning, match="inferred"):
        ds = CodeSequenceDataset(tmp_path / "c.npy")
    assert ds.grid_shape == (3, 3) and ds.layout.num_codes == int(codes.max()) + 1
    ds2 = CodeSequenceDataset(tmp_path / "c.npy", num_codes=64)  # codebook size wins, no warning
    assert ds2.layout == TokenLayout(64)


def test_invalid_code_policies(tmp_path):
    codes = np.array([[0, 1, -1, 2], [3, 3, 3, 3], [1, 99, 2, 0]], dtype=np.int64)
    path = tmp_path / "codes.npy"
    np.save(path, codes)
    layout = TokenLayout(4)
    ds = CodeSequenceDataset(path, layout=layout, invalid_codes="unk")
    assert ds.num_invalid == 2 and len(ds) == 3
    assert ds[0]["input_ids"][3] == layout.unk_id
    assert ds[0]["labels"][2] == -100  # UNK is never a target
    assert (ds[2]["input_ids"] == layout.unk_id).sum() == 1
    with pytest.raises(DataError, match=r"codes.npy: 2 invalid codes .* row 0, position 2"):
        CodeSequenceDataset(path, layout=layout, invalid_codes="error")
    with pytest.warns(UserWarning, match="dropped 2 of 3"):
        ds = CodeSequenceDataset(path, layout=layout, invalid_codes="drop")
    assert len(ds) == 1 and ds[0]["input_ids"][1:].tolist() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="invalid_codes"):
        CodeSequenceDataset(path, layout=layout, invalid_codes="ignore")


def test_windows_cover_every_target_once(tiny_codes):
    codes_path, labels_path = tiny_codes
    full = CodeSequenceDataset(codes_path, labels_path, layout=TokenLayout(16, 3))
    win = CodeSequenceDataset(codes_path, labels_path, layout=TokenLayout(16, 3), seq_len=8)
    starts = window_starts(18, 8)
    assert starts == [0, 4, 8, 10]
    assert len(win) == 100 * len(starts)
    assert win[0]["input_ids"].shape == (8,)
    # the scored targets of one sequence's windows are exactly its full sequence's targets
    scored = sorted(
        int(t)
        for w in range(len(starts))
        for t in win[w]["labels"][win[w]["labels"] != -100]
    )
    expected = sorted(int(t) for t in full[0]["labels"][full[0]["labels"] != -100])
    assert scored == expected
    assert (win.labels != -100).sum() == (full.labels != -100).sum()


def test_pad_collate_values():
    batch = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([6, 7, 8])},
        {"input_ids": torch.tensor([1]), "labels": torch.tensor([2])},
    ]
    out = pad_collate(batch, pad_id=42, with_attention_mask=True)
    assert out["input_ids"].tolist() == [[5, 6, 7], [1, 42, 42]]
    assert out["labels"].tolist() == [[6, 7, 8], [2, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert "attention_mask" not in pad_collate(batch, pad_id=0)


# -- bad inputs: each a one-line error naming the file ----------------------


def _write(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 9), dtype=np.float32), "must be integers"),
        (np.zeros(9, dtype=np.int64), r"shaped \(N, H\*W\)"),
        (np.zeros((2, 3, 3, 1), dtype=np.int64), r"shaped \(N, H\*W\)"),
        (np.zeros((0, 9), dtype=np.int64), "empty"),
        (np.array([[1, 2], [3, 4]], dtype=object), "pickled"),
    ],
)
def test_bad_codes_files(tmp_path, array, message):
    path = _write(tmp_path, "bad.npy", array)
    with pytest.raises(DataError, match=message) as err:
        CodeSequenceDataset(path, num_codes=8)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_and_missing_codes(tmp_path):
    path = _write(tmp_path, "codes.npy", np.zeros((100, 49), dtype=np.int64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="codes.npy: the header promises .* truncated or forged"):
        CodeSequenceDataset(path, num_codes=8)
    with pytest.raises(DataError, match="nope.npy: codes file not found"):
        CodeSequenceDataset(tmp_path / "nope.npy", num_codes=8)


def test_bad_labels(tmp_path):
    codes = _write(tmp_path, "codes.npy", np.zeros((10, 4), dtype=np.int64))
    short = _write(tmp_path, "short.npy", np.zeros(9, dtype=np.int64))
    with pytest.raises(DataError, match="short.npy: expected 10 labels"):
        CodeSequenceDataset(codes, short, layout=TokenLayout(8, 3))
    high = _write(tmp_path, "high.npy", np.full(10, 3, dtype=np.int64))
    with pytest.raises(DataError, match=r"high.npy: labels must lie in 0..2"):
        CodeSequenceDataset(codes, high, layout=TokenLayout(8, 3))
    neg = _write(tmp_path, "neg.npy", np.full(10, -1, dtype=np.int64))
    with pytest.raises(DataError, match="neg.npy"):
        CodeSequenceDataset(codes, neg, layout=TokenLayout(8, 3))
    floats = _write(tmp_path, "f.npy", np.zeros(10, dtype=np.float64))
    with pytest.raises(DataError, match="f.npy: labels must be integers"):
        CodeSequenceDataset(codes, floats, layout=TokenLayout(8, 3))


def test_worker_tokenize_rows_matches_the_dataset(tmp_path):
    """The Ray Data path and CodeSequenceDataset share one token layout implementation:
    existing-tools codes shaped (N, H, W) with -1 give the same examples either way."""
    from arplatform.distributed.code_data import apply_policy, tokenize_rows

    rng = np.random.default_rng(1)
    codes = rng.integers(-1, 8, size=(6, 3, 3))
    labels = rng.integers(0, 2, size=6)
    layout = TokenLayout(8, 2)
    ds = CodeSequenceDataset(codes, labels, layout=layout)
    for seq_len in (None, 6):
        out = tokenize_rows({"codes": codes, "labels": labels}, layout, seq_len)
        ref = CodeSequenceDataset(codes, labels, layout=layout, seq_len=seq_len)
        assert np.array_equal(out["input_ids"], ref.input_ids.numpy())
        assert np.array_equal(out["labels"], ref.labels.numpy())
    assert (ds.input_ids == layout.unk_id).sum() == (codes == -1).sum()
    dropped = apply_policy({"codes": codes, "labels": labels}, layout.num_codes, "drop")
    kept = ~(codes == -1).reshape(6, -1).any(1)
    assert len(dropped["codes"]) == len(dropped["labels"]) == int(kept.sum())
    assert np.array_equal(dropped["labels"], labels[kept])


def test_preflight_holds_one_chunk_at_a_time(tmp_path):
    """The driver's check of the code files reads a chunk of one file at a time: its peak memory
    is a chunk's, not the data's, for many shards and for one large file (every array numpy
    allocates is traced)."""
    import tracemalloc

    from arplatform.config import CodeDataConfig
    from arplatform.distributed.code_data import preflight, resolve_files

    rng = np.random.default_rng(0)
    for folder, shards, rows in (("shards", 8, 40_000), ("one", 1, 400_000)):
        os.makedirs(tmp_path / folder)
        for i in range(shards):
            np.save(tmp_path / folder / f"codes-{i:05d}.npy", rng.integers(0, 64, (rows, 16), dtype=np.int32))
            np.save(tmp_path / folder / f"labels-{i:05d}.npy", rng.integers(0, 5, rows))
        cfg = CodeDataConfig(codes=str(tmp_path / folder), labels=str(tmp_path / folder), num_codes=64)
        files = resolve_files(cfg)
        data = shards * rows * 16 * 4  # the codes' bytes on disk
        tracemalloc.start()
        try:
            facts = preflight(cfg, files)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert facts.layout.num_codes == 64 and facts.layout.num_classes == 5 and facts.num_positions == 16
        assert peak < data / 2, f"{folder}: preflight peaked at {peak / data:.2f}× the codes' size"


def test_preflight_without_a_vocabulary(tmp_path):
    """With no codebook and no num_codes the vocabulary is inferred from the valid codes;
    negative codes are still invalid, and files without one valid code are refused in a line."""
    from arplatform.config import CodeDataConfig
    from arplatform.distributed.code_data import preflight, resolve_files

    codes = np.array([[0, 5, -1, 2]] * 4, dtype=np.int64)
    np.save(tmp_path / "codes.npy", codes)
    cfg = CodeDataConfig(codes=str(tmp_path / "codes.npy"), invalid_codes="error")
    with pytest.raises(DataError, match=r"codes.npy: 4 invalid codes .* first at row 0"):
        preflight(cfg, resolve_files(cfg))
    with pytest.warns(UserWarning, match="vocabulary size 6 inferred"):
        facts = preflight(CodeDataConfig(codes=str(tmp_path / "codes.npy")), resolve_files(cfg))
    assert facts.layout.num_codes == 6 and facts.layout.num_classes == 0
    np.save(tmp_path / "codes.npy", -np.ones((3, 4), dtype=np.int64))
    with pytest.raises(DataError, match="no valid code in the code files; give data.num_codes"):
        preflight(CodeDataConfig(codes=str(tmp_path / "codes.npy")), resolve_files(cfg))
