import os

import numpy as np
import pytest
import torch

# Tests run on 1–2 CPU threads; keep torch from oversubscribing the CI machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_codes(tmp_path, rng):
    """100 sequences of a 4×4 grid over 16 codes, with 3 classes, written as real .npy files."""
    codes = rng.integers(0, 16, size=(100, 16)).astype(np.int32)
    labels = rng.integers(0, 3, size=100).astype(np.int64)
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "labels.npy", labels)
    return tmp_path / "codes.npy", tmp_path / "labels.npy"


def pytest_configure(config):
    """The precision verdicts the suite measures go to a cache of its own, not the user's ~/.cache."""
    import tempfile

    os.environ.setdefault("ARPLATFORM_CACHE_DIR", tempfile.mkdtemp(prefix="arplatform-test-cache-"))
