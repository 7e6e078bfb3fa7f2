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


_OWN_CACHE = []  # the cache folder this session made (none when ARPLATFORM_CACHE_DIR was set)


def pytest_configure(config):
    """The precision verdicts the suite measures go to a cache of its own, not the user's ~/.cache;
    removed when the session ends."""
    import tempfile

    if "ARPLATFORM_CACHE_DIR" not in os.environ:
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="arplatform-test-cache-"))
        os.environ["ARPLATFORM_CACHE_DIR"] = _OWN_CACHE[0]


def pytest_unconfigure(config):
    import shutil

    for folder in _OWN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray head for the tests that need *a* cluster, not one of their own (a job that is
    killed with its cluster, a budget refusal that counts the cluster's CPUs, and the job-submit
    and two-node tests start their own). Joining it saves each command the start and stop of a
    local cluster. Its workers get the platform's quiet settings, as a local cluster's would.
    4 logical CPUs: a job of 2 workers × 0.5 CPU plus its Ray Data tasks, and a second job at
    once (the concurrent-runs test). Yields the variables that make a command join it."""
    import shutil
    import tempfile

    from helpers import start_head, stop_process_group

    from arplatform.distributed.cluster import QUIET_ENV

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths live under it
    group, join, _ = start_head(tmp, 4, QUIET_ENV | dict(os.environ))
    try:
        yield join | {"ARPLATFORM_TEST_RAY_TEMP": tmp}  # (where its logs are: a test greps them)
    finally:
        stop_process_group(group)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on loopback, with its own port and a
    bucket; the AWS_* variables that reach it are set in this process (pyarrow, boto3 and the
    processes the tests start read them). Stopped by its own handle."""
    import socket
    import subprocess
    import sys
    import time

    from helpers import free_port

    port = free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        import pyarrow.fs

        pyarrow.fs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("arplatform-test")
        yield {"endpoint": endpoint, "bucket": "arplatform-test", "env": env}
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_root(s3_server, request):
    """A fresh prefix in the test bucket: s3://arplatform-test/<test name>-<random>."""
    import uuid

    return f"s3://{s3_server['bucket']}/{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"

