"""The storage layer against a real S3-compatible server (moto, on loopback): files written
whole, listed, fetched; mirrors pushed and pulled; a samples folder and a codebook's VAE in a
bucket; a URI root without an MLflow store every node reaches is refused in one line."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from arplatform.core.codebook import save_codebook
from arplatform.core.errors import StorageError
from arplatform.outputs import sample_folder, storage
from arplatform.outputs.publish import codebook_vae_path


def test_files_round_trip_in_a_bucket(s3_root, tmp_path):
    bucket = storage.Location(s3_root)
    assert bucket.remote and not bucket.exists("a/b.txt") and bucket.listdir("a") == []
    bucket.write_bytes("a/b.txt", b"one")
    path = bucket / "a/b.txt"
    assert path.isfile() and path.read_bytes() == b"one" and path.path == f"{s3_root}/a/b.txt"
    assert bucket.listdir("a") == ["b.txt"] and path.parent == bucket / "a" and path.name == "b.txt"
    local = path.fetch()
    assert open(local, "rb").read() == b"one" and path.fetch() == local  # cached
    bucket.write_bytes("a/b.txt", b"changed")
    assert open(path.fetch(), "rb").read() == b"changed"  # a changed object is fetched again
    assert bucket.file("x/../y") == bucket.file("y") == f"{s3_root}/y"
    with pytest.raises(StorageError, match="missing"):
        bucket.fetch("missing")


def test_a_fetched_folder_follows_the_bucket(s3_root):
    """Same-size rewrites are fetched again and removed files disappear from the local copy
    (a re-tokenized folder has codes of the same shape)."""
    folder = storage.Location(s3_root) / "codebook"
    folder.write_bytes("codes.npy", b"aaaa")
    folder.write_bytes("shards/codes-00001.npy", b"s")
    local = folder.fetch_folder()
    assert open(os.path.join(local, "codes.npy"), "rb").read() == b"aaaa"
    time.sleep(1.1)  # object stores keep modification times to the second
    folder.write_bytes("codes.npy", b"bbbb")
    folder.remove_tree("shards")
    local = folder.fetch_folder()
    assert open(os.path.join(local, "codes.npy"), "rb").read() == b"bbbb"
    assert not os.path.exists(os.path.join(local, "shards", "codes-00001.npy"))


def test_local_paths_behave_as_before(tmp_path):
    path = tmp_path / "f.json"
    folder = storage.Location(tmp_path)
    folder.write_json("f.json", {"a": 1})
    assert folder.read_json_object("f.json") == {"a": 1} and folder.fetch("f.json") == str(path)
    assert (folder / "f.json").sha256() == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert storage.Location(f"file://{path}").path == str(path) and folder.listdir("missing") == []
    mirror = storage.Root(str(tmp_path))
    assert mirror.local == str(tmp_path) and not mirror.remote and mirror.public(str(path)) == str(path)
    assert mirror.file("a/b") == os.path.join(str(tmp_path), "a", "b") == mirror.local_path("a", "b")
    mirror.push(str(path))  # nothing to do for a local root
    folder.remove_tree("missing")  # nothing there: nothing to do
    assert folder.newest_mtime() == os.stat(path).st_mtime_ns / 1e9 and folder.newest_mtime("missing") is None


def test_mirror_pushes_a_linked_tree_and_pulls_it_elsewhere(s3_root, tmp_path, monkeypatch):
    mirror = storage.Root(s3_root)
    version = os.path.join(mirror.local, "versions", "v1")
    os.makedirs(os.path.join(version, "sub"))
    open(os.path.join(version, "sub", "x.bin"), "wb").write(b"x" * 1000)
    os.makedirs(os.path.join(mirror.local, "codebook"))
    os.symlink(version, os.path.join(mirror.local, "codebook", "name"))  # published folders are links
    mirror.push(mirror.local_path("codebook", "name"))
    assert mirror.read_bytes("codebook/name/sub/x.bin") == b"x" * 1000
    assert mirror.public(os.path.join(mirror.local, "codebook", "name")) == s3_root + "/codebook/name"
    assert mirror.file("codebook/name") == s3_root + "/codebook/name"
    monkeypatch.setenv("ARPLATFORM_CACHE_DIR", str(tmp_path / "other-machine"))
    other = storage.Root(s3_root)
    assert other.local != mirror.local
    other.pull("codebook", "name")
    assert open(os.path.join(other.local, "codebook", "name", "sub", "x.bin"), "rb").read() == b"x" * 1000


def test_samples_folder_in_a_bucket(s3_root):
    out = storage.Location(s3_root) / "samples"
    for first in (0, 4):
        index = np.arange(first, first + 4)
        images = np.full((4, 8, 8, 1), first, np.uint8)
        sample_folder.write_batch(out, index, index % 2, np.zeros((4, 16), np.int32) + first, images)
    done = sample_folder.finish(out, {"checkpoint_sha256": "x", "settings": {}}, [])
    assert done["index"].tolist() == list(range(8))
    assert len(out.listdir("images")) == 8 and out.listdir("images") == \
        storage.Location(f"{s3_root}/samples/images").listdir()
    with np.load(out.fetch("samples.npz"), allow_pickle=False) as z:
        assert z["images"].shape == (8, 8, 8) and z["labels"].tolist() == [0, 1] * 4
    with pytest.raises(Exception, match="another checkpoint"):
        sample_folder.check_manifest(out, {"checkpoint_sha256": "y", "settings": {}})


def test_codebook_in_a_bucket_finds_its_vae(s3_root, tmp_path):
    """A bucket holds copies of the published folders (no version links): the codebook's
    relative VAE path falls back to the published layout beside it."""
    local = tmp_path / "codebook.pt"
    save_codebook(local, torch.randn(4, 2), {"num_codes": 4, "name": "demo",
                                              "vae_checkpoint": os.path.join("..", "vae", "checkpoints", "best.pt")})
    bucket = storage.Location(s3_root)
    codebook = bucket.write_bytes("codebook/demo/codebook.pt", local.read_bytes())
    vae = bucket.write_bytes("vae_demo/checkpoints/best.pt", b"weights")
    assert codebook_vae_path(codebook) == vae == f"{s3_root}/vae_demo/checkpoints/best.pt"


def test_uri_root_without_a_tracking_store_is_refused(s3_root, tmp_path):
    from helpers import learnable_codes

    data = learnable_codes(tmp_path / "codes")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "arplatform", "train", "--config-name", "transformer/mnist_sample",
                           f"output_root={s3_root}", f"data.codebook_dir={data}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tracking.tracking_uri" in proc.stderr


@pytest.mark.parametrize("case", ["unknown scheme", "missing bucket", "missing checkpoint",
                                  pytest.param("endpoint down", marks=pytest.mark.slow)])  # (S3's retries: 8 s)
def test_unreachable_storage_is_one_line(case, s3_server, tmp_path, monkeypatch):
    """Bad URIs stop with one line and exit 2 before any work: the key or file, and why. A down
    endpoint through the command in a process of its own (this one's S3 clients are made for the
    live one); the others through the same entry points in this process (`helpers.run_main`)."""
    from helpers import free_port, learnable_codes, run_main

    from arplatform.cli import generate as generate_cli
    from arplatform.cli import train as train_cli

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    data = learnable_codes(tmp_path / "codes", n=40)
    train = (train_cli, ["--config-name", "transformer/mnist_sample", f"data.codebook_dir={data}",
                         "tracking.enabled=false"])
    generate = (generate_cli, ["--transformer_ckpt"])
    (command, args), extra, expect = {
        "unknown scheme": (train, ["output_root=nosuch://bucket/x"], "output_root: cannot write to nosuch://"),
        "missing bucket": (train, ["output_root=s3://no-such-bucket/x"], "output_root: cannot write to s3://"),
        "missing checkpoint": (generate, [f"s3://{s3_server['bucket']}/none/best.pt"],
                               "transformer checkpoint not found"),
        "endpoint down": (generate, [f"s3://{s3_server['bucket']}/none/best.pt"], "s3://"),
    }[case]
    if case == "endpoint down":
        env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
        proc = subprocess.run([sys.executable, "-m", command.__name__, *args, *extra], env=env, capture_output=True,
                              text=True, timeout=180)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = run_main(command.main, [*args, *extra])
    assert code == 2, err[-2000:]
    assert expect in err.strip().splitlines()[-1] and "Traceback" not in err, err[-2000:]
    assert not os.path.exists(tmp_path / "experiments")  # nothing written


def test_a_dead_runs_bucket_staging_is_removed_and_a_live_ones_kept(s3_root, tmp_path):
    """engine=ray's staging folder in a bucket is held by a lease its run renews; one a killed
    driver left is removed by a later run, by the store's clock; a live run's is kept."""
    from arplatform.outputs import publish

    root = storage.Root(s3_root)
    dead = root / ".staging/.staging-tokenize-demo-1-dead"
    dead.write_bytes("codebook/codes-00000.npy", b"x")
    time.sleep(1.5)  # the store keeps modification times to the second
    staging = tmp_path / ".staging-tokenize-demo-2-live"
    staging.mkdir()
    assert root.listdir(".staging") == [dead.name]  # not expired yet: kept
    with publish.shared_staging(root, str(staging)) as shared:
        assert shared == root / f".staging/{staging.name}" and shared.exists("lease.json")
        assert dead.name in root.listdir(".staging")
        renewed = shared.newest_mtime()
        assert dead.newest_mtime() <= renewed - 1
        # as a run LEASE_EXPIRES_S later would see it, had this one stopped renewing just now
        later = renewed + publish.LEASE_EXPIRES_S - 0.5
        assert publish.remove_expired_staging(root, now=later) == [dead.path]
        assert root.listdir(".staging") == [staging.name]
        # a driver whose own clock runs 16 minutes fast takes "now" from the store: the live lease stays (N3)
        real = time.time
        try:
            time.time = lambda: real() + 16 * 60
            assert publish.remove_expired_staging(root) == []
        finally:
            time.time = real
        assert root.listdir(".staging") == [staging.name]
        assert not [n for n in root.listdir() if n.startswith(".arplatform-clock")]
    assert root.listdir(".staging") == []  # its own, deleted when it ended
    with publish.shared_staging(storage.Root(tmp_path), str(staging)) as shared:
        assert shared == storage.Location(staging)  # a local root: the local staging folder itself


@pytest.mark.slow
def test_a_checkpoint_trained_in_a_bucket_outlives_a_retokenize(s3_root, tmp_path, monkeypatch):
    """Tokenize into a bucket, train there, tokenize again: the checkpoint names the tokenizer
    version (a copy in the bucket that nothing overwrites), so generate on a fresh machine still
    draws with the codebook and VAE it was trained on (N2)."""
    import json

    from helpers import TINY

    tok = [sys.executable, "-m", "arplatform", "tokenize", "--config-name", "tokenizer/mnist_sample",
           f"output_root={s3_root}", "data.limit=600", "vae.epochs=1", "vae.batch_size=64", "codebook.num_codes=16",
           "codebook.iters=3", "vae.precision=fp32", "tracking.enabled=false"]
    for cmd in (tok, [sys.executable, "-m", "arplatform", "train", "--config-name", "transformer/mnist_sample",
                      f"output_root={s3_root}", f"data.codebook_dir={s3_root}/codebook/mnist_sample", *TINY,
                      "optim.max_steps=5", "optim.epochs=1", "trainer.num_workers=1", "sample.num_samples=0",
                      "tracking.enabled=false"], [*tok, "data.seed=2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    versions = storage.Location(s3_root).listdir("tokenizers/mnist_sample")
    assert len(versions) == 2
    monkeypatch.setenv("ARPLATFORM_CACHE_DIR", str(tmp_path / "fresh"))  # a machine that saw none of it
    proc = subprocess.run([sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt",
                           f"{s3_root}/transformer/mnist_sample/checkpoints/best.pt", "--num_samples", "4",
                           "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    for key in ("codebook_pt", "vae_ckpt"):
        assert "/tokenizers/mnist_sample/" in manifest[key], manifest[key]


def test_a_write_check_never_removes_a_folder_another_process_fills(tmp_path, monkeypatch):
    """`check_writable` makes the missing folders of a path and removes them again; a parent that
    another process puts something in meanwhile (two sweep trials under one `trials/`) is left
    standing, with what they put there."""
    from arplatform.outputs import storage

    real_mkdir = os.mkdir

    def mkdir_then_another_process(path, *args):
        real_mkdir(path, *args)
        if os.path.basename(path) == "trials":
            real_mkdir(os.path.join(path, "other"))  # another trial's folder, made right then

    monkeypatch.setattr(storage.os, "mkdir", mkdir_then_another_process)
    storage.Location(tmp_path / "sweep" / "trials" / "mine").check_writable("out")
    monkeypatch.undo()
    assert (tmp_path / "sweep" / "trials" / "other").is_dir()
    assert not (tmp_path / "sweep" / "trials" / "mine").exists()
    storage.Location(tmp_path / "new" / "a" / "b").check_writable("out")  # alone, as before: nothing left
    assert not (tmp_path / "new").exists()
