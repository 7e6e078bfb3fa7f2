"""Every damaged file the platform reads gets one clear line: random, truncated and corrupted
checkpoints (a seeded fuzz), samples folders that are not what `generate` writes, a malformed
sampler.json beside the seed's path, an --out that names a file."""

import contextlib
import io
import json
import os
import warnings

import numpy as np
import pytest
from helpers import learnable_codes
from test_generate import generate, write_models

from arplatform.cli import evaluate as evaluate_cli
from arplatform.cli import train as train_cli
from arplatform.core.checkpoint import load_checkpoint
from arplatform.core.codebook import load_codebook_file
from arplatform.core.errors import CheckpointError, DataError
from arplatform.core.vae import load_vae


def damaged(real: bytes, rng, i: int) -> bytes:
    """Random bytes, a truncated copy, a copy with bytes flipped, or a zip header over noise."""
    kind = i % 4
    if kind == 0:
        return rng.bytes(int(rng.integers(1, 5000)))
    if kind == 1:
        return real[: int(rng.integers(1, len(real)))]
    if kind == 2:
        out = bytearray(real)
        for _ in range(int(rng.integers(1, 20))):
            out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
        return bytes(out)
    return b"PK\x03\x04" + rng.bytes(int(rng.integers(1, 3000)))


def test_damaged_checkpoints_codebooks_and_vaes_are_one_line(tmp_path):
    """400 damaged files per reader (seeded): each loads (a flipped byte inside a tensor is not
    detectable) or raises the platform's own error, never IndexError/KeyError from the unpickler."""
    ckpt, codebook, vae = write_models(tmp_path / "m")
    rng = np.random.default_rng(0)
    escaped = []
    for reader, source in ((load_checkpoint, ckpt), (load_codebook_file, codebook), (load_vae, vae)):
        real = open(source, "rb").read()
        for i in range(400):
            path = tmp_path / f"{reader.__name__}-{i}.pt"
            path.write_bytes(damaged(real, rng, i))
            try:
                with warnings.catch_warnings():  # torch warns of the odd pickle protocols noise claims
                    warnings.simplefilter("ignore")
                    reader(str(path))
            except (CheckpointError, DataError) as e:
                assert str(path) in str(e) and "\n" not in str(e)
            except Exception as e:  # noqa: BLE001 - what the test is looking for
                escaped.append(f"{reader.__name__} #{i}: {type(e).__name__}: {e}")
    assert not escaped, "\n".join(escaped[:10])


def evaluate(folder) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = evaluate_cli.main(["samples", "--samples-dir", str(folder)])
    return code, err.getvalue()


@pytest.mark.parametrize("damage, message", [
    ("manifest {}", "manifest.json: not a samples manifest (no checkpoint)"),
    ("manifest wrong type", "manifest.json: not a samples manifest (no checkpoint)"),
    ("manifest list", "manifest.json: expected a JSON object"),
    ("npz text", "samples.npz: not a samples file holding images and labels"),
    ("npz without images", "samples.npz: not a samples file holding images and labels"),
    ("npz pickled objects", "samples.npz: not a samples file holding images and labels"),
    ("npz float images", "samples.npz: expected uint8 images"),
])
def test_a_damaged_samples_folder_is_one_line(tmp_path, damage, message):
    ckpt, _, _ = write_models(tmp_path / "m")
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", tmp_path / "s")[0] == 0
    folder = tmp_path / "s"
    writes = {
        "manifest {}": lambda: (folder / "manifest.json").write_text("{}"),
        "manifest wrong type": lambda: (folder / "manifest.json").write_text(json.dumps({"checkpoint": 3})),
        "manifest list": lambda: (folder / "manifest.json").write_text("[1, 2]"),
        "npz text": lambda: (folder / "samples.npz").write_text("hello"),
        "npz without images": lambda: np.savez(folder / "samples.npz", labels=np.zeros(2)),
        "npz pickled objects": lambda: np.savez(folder / "samples.npz", images=np.array([{}], dtype=object),
                                                labels=np.zeros(1)),
        "npz float images": lambda: np.savez(folder / "samples.npz", images=np.zeros((2, 4, 4)), labels=np.zeros(2)),
    }
    writes[damage]()
    if (folder / "samples.npz.npz").exists():  # np.savez appends .npz to a name without it
        os.replace(folder / "samples.npz.npz", folder / "samples.npz")
    code, err = evaluate(folder)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err


@pytest.mark.parametrize("content", ["not json", "{}", '{"sample": 3}', '{"sample": {"temperature": "hot"}}',
                                     '{"sample": {"temperature": -1}}', '{"sample": {"bogus": 1}}'])
def test_a_malformed_sampler_json_stops_training_before_it_starts(tmp_path, content):
    """Training samples its grid after the last epoch with the sampler.json beside the seed's
    path: a damaged one is refused in one line before Ray starts, nothing trained or written."""
    data = learnable_codes(tmp_path / "codes", n=64)
    seed_dir = tmp_path / "out" / "transformer" / "mnist_sample" / "checkpoints"
    seed_dir.mkdir(parents=True)
    (seed_dir / "sampler.json").write_text(content)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = train_cli.main(["--config-name", "transformer/mnist_sample", f"output_root={tmp_path / 'out'}",
                               f"data.codebook_dir={data}"])
    assert code == 2 and f"{seed_dir / 'sampler.json'}:" in err.getvalue(), err.getvalue()
    assert err.getvalue().strip().count("\n") == 0, err.getvalue()
    assert sorted(os.listdir(seed_dir.parent)) == ["checkpoints"] and not (tmp_path / "out" / "ray").exists()


def test_out_naming_a_file_is_one_line(tmp_path):
    ckpt, _, _ = write_models(tmp_path / "m")
    (tmp_path / "taken").write_text("not a folder")
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", tmp_path / "taken")
    assert code == 2 and "out:" in err and "is a file" in err and err.strip().count("\n") == 0, err
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_a_rerun_removes_what_a_killed_writer_left_half_written(tmp_path):
    """A SIGKILL inside `atomic_write` leaves `.<name>.<random>.tmp` beside the PNGs and codes;
    the next generate into the folder (under its writer lock) removes them, and keeps the rest."""
    ckpt, _, _ = write_models(tmp_path / "m")
    args = ("--transformer_ckpt", ckpt, "--num_samples", 4, "--batch_size", 2, "--out", tmp_path / "s")
    assert generate(*args)[0] == 0
    leftovers = [tmp_path / "s" / "images" / ".000004.png.k3j2.tmp", tmp_path / "s" / "codes" / ".codes-x.npy.a1.tmp",
                 tmp_path / "s" / ".samples.npz.zz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    code, _, err = generate(*args[:3], 6, *args[4:])
    assert code == 0, err
    assert not any(p.exists() for p in leftovers)
    assert len(os.listdir(tmp_path / "s" / "images")) == 6


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_work(tmp_path, monkeypatch):
    """--batch_size 65536 once allocated 6.8 GB and died in the allocator: the KV cache, logits
    and decoding of a batch are estimated first and refused in one line that says what fits."""
    import arplatform.core.budget as budget

    ckpt, _, _ = write_models(tmp_path / "m")
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 200 * 2**20)  # a machine with 200 MiB free
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 65536, "--batch_size", 65536,
                            "--out", tmp_path / "s")
    assert code == 2 and "batch_size: 65536 samples at once" in err and "at most" in err, err
    assert err.strip().count("\n") == 0 and not (tmp_path / "s").exists()
    fits = int(err.split("at most ")[1].split()[0])
    assert 1 <= fits < 65536
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 8, "--batch_size", min(fits, 8),
                            "--out", tmp_path / "s")
    assert code == 0, err


@pytest.mark.parametrize("where", ["below_a_file", "in_proc"])
def test_out_below_a_file_or_where_no_folder_can_be_made_is_one_line(tmp_path, where):
    ckpt, _, _ = write_models(tmp_path / "m")
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" / "sub" if where == "below_a_file" else "/proc/arplatform-test-out"
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", out)
    assert code == 2 and "out: cannot make the folder" in err and err.strip().count("\n") == 0, err
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_print_config_into_a_closed_pipe_is_quiet(tmp_path):
    """`--print-config | head`: the reader leaves early; no BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m arplatform train --config-name transformer/mnist_sample "
                          "--print-config | true", shell=True, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_a_bad_checkpoint_is_named_as_the_user_gave_it(tmp_path):
    """The reader loads a private copy (`Location.pinned`); the error names the user's file."""
    (tmp_path / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, _, err = generate("--transformer_ckpt", tmp_path / "notes.txt", "--num_samples", 2,
                            "--out", tmp_path / "out")
    assert code == 2 and f"{tmp_path / 'notes.txt'}:" in err and "arplatform-pinned" not in err, err
