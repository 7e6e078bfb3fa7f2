"""`python -m arplatform generate`: the seed's flags, the samples folder, determinism across
batch sizes, engines and actor counts, resume after a kill, and one line for bad models."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from helpers import job_env

from arplatform import GPT, GPTConfig, TokenLayout, save_checkpoint
from arplatform.cli import generate as generate_cli
from arplatform.config import GenerateConfig
from arplatform.core.checkpoint import load_model
from arplatform.core.codebook import save_codebook
from arplatform.core.vae import VAE, VAEConfig


def write_models(folder, k=16, latent=4, classes=3, grid=4, seed=0, sample=None):
    """A small GPT, codebook and VAE that fit together, named the way the platform names them."""
    torch.manual_seed(seed)
    os.makedirs(folder, exist_ok=True)
    vae = save_checkpoint(os.path.join(folder, "vae.pt"), VAE(VAEConfig(1, grid * 4, latent, 8)), kind="vae")
    codebook = os.path.join(folder, "codebook.pt")
    save_codebook(codebook, torch.randn(k, latent), {"num_codes": k, "num_classes": classes, "grid": [grid, grid],
                                                     "vae_checkpoint": "vae.pt"})
    layout = TokenLayout(k, classes)
    gpt = GPT(GPTConfig(layout.vocab_size, 32, 32, 1, 2))
    trained = {"name": "tiny", "codebook_pt": codebook} | ({"sample": sample} if sample else {})
    ckpt = save_checkpoint(os.path.join(folder, "best.pt"), gpt, layout, grid_shape=(grid, grid), train_config=trained)
    return ckpt, codebook, vae


def generate(*args):
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = generate_cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def images(folder):
    with np.load(os.path.join(folder, "samples.npz")) as z:
        return z["images"], z["labels"], z["index"]


def test_seed_flags_write_the_samples_folder(tmp_path):
    ckpt, codebook, vae = write_models(tmp_path / "m")
    out = tmp_path / "s"
    code, log, err = generate("--transformer_ckpt", ckpt, "--vae_ckpt", vae, "--codebook_pt", codebook,
                              "--num_samples", 10, "--batch_size", 4, "--out", out, "--top_k", 0)
    assert code == 0, err
    assert sorted(os.listdir(out / "images")) == [f"{i:06d}.png" for i in range(10)]
    assert len(list((out / "codes").glob("index-*.npy"))) == 3
    assert {"manifest.json", "grid.png", "samples.npz"} <= set(os.listdir(out))
    imgs, labels, index = images(out)
    assert imgs.shape == (10, 16, 16) and imgs.dtype == np.uint8
    assert labels.tolist() == [i % 3 for i in range(10)] and index.tolist() == list(range(10))
    assert "10/10 images" in log and "images/s" in log
    # the codebook and VAE default from the checkpoint and the codebook: same images
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 10, "--out", tmp_path / "s2", "--top_k", 0)
    assert code == 0, err
    assert np.array_equal(images(tmp_path / "s2")[0], imgs)


def test_same_seed_same_images_whatever_the_batch(tmp_path):
    ckpt, _, _ = write_models(tmp_path / "m")
    runs = []
    for bs in (3, 8):
        code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 9, "--batch_size", bs,
                                "--classes", "0,2", "--out", tmp_path / f"b{bs}", "--seed", 5)
        assert code == 0, err
        runs.append(images(tmp_path / f"b{bs}"))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1].tolist() == [0, 2] * 4 + [0]
    code, _, _ = generate("--transformer_ckpt", ckpt, "--num_samples", 9, "--classes", "0,2",
                          "--out", tmp_path / "other", "--seed", 6)
    assert code == 0 and not np.array_equal(images(tmp_path / "other")[0], runs[0][0])


def test_fewer_samples_than_the_folder_holds_is_refused(tmp_path):
    """samples.npz would hold more than asked: refused in one line, the folder unchanged."""
    ckpt, _, _ = write_models(tmp_path / "m")
    out = tmp_path / "s"
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 8, "--out", out)[0] == 0
    before = (out / "samples.npz").read_bytes()
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 4, "--out", out)
    assert code == 2 and err.count("\n") == 1 and "--num_samples 8 or more" in err, err
    assert (out / "samples.npz").read_bytes() == before and len(images(out)[0]) == 8


def test_a_folder_generate_did_not_write_is_never_written(tmp_path):
    """--out naming a tokenizer's output (or any folder without a samples manifest): refused in
    one line, nothing added there; an empty folder is a new one."""
    ckpt, _, _ = write_models(tmp_path / "m")
    out = tmp_path / "codebook"
    out.mkdir()
    (out / "codes.npy").write_bytes(b"someone else's")
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 4, "--out", out)
    assert code == 2 and err.count("\n") == 1 and "holds files generate did not write (codes.npy" in err, err
    assert sorted(os.listdir(out)) == ["codes.npy"]
    (tmp_path / "empty").mkdir()
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 4, "--out", tmp_path / "empty")[0] == 0


def test_more_samples_later_keeps_the_first_ones(tmp_path):
    ckpt, _, _ = write_models(tmp_path / "m")
    out = tmp_path / "s"
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 6, "--out", out)[0] == 0
    first = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    code, log, err = generate("--transformer_ckpt", ckpt, "--num_samples", 10, "--out", out)
    assert code == 0, err
    assert "6 already written, 4 to draw" in log
    assert all((out / "images" / n).stat().st_mtime_ns == t for n, t in first.items())
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 10, "--out", tmp_path / "clean")[0] == 0
    assert np.array_equal(images(out)[0], images(tmp_path / "clean")[0])


@pytest.mark.slow
def test_killed_generation_resumes_without_redoing_or_duplicates(tmp_path):
    """2,000 samples, killed after a few batches, resumed: an exact copy of a clean run."""
    ckpt, _, _ = write_models(tmp_path / "m", grid=8)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt", ckpt, "--num_samples", "2000",
           "--batch_size", "32", "--out", str(out), "--format", "npz"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list((out / "codes").glob("index-*.npy"))) < 2 and time.time() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    marks = {p.name: p.stat().st_mtime_ns for p in (out / "codes").glob("index-*.npy")}
    assert 2 <= len(marks) < 60 and not (out / "samples.npz").exists()
    # the folder was bound before its first image: another seed, settings or checkpoint is refused
    other, other_codebook, other_vae = write_models(tmp_path / "other", grid=8, seed=1)
    held = json.loads((out / "precision.json").read_text())["precision"]  # what `auto` chose, bound
    for args, name in ((["--transformer_ckpt", ckpt, "--seed", "9"], "settings"),
                       (["--transformer_ckpt", ckpt, "--cfg_scale", "3"], "settings"),
                       (["--transformer_ckpt", other], "checkpoint"),
                       (["--transformer_ckpt", ckpt, "--codebook_pt", other_codebook, "--allow_mismatch"], "codebook"),
                       (["--transformer_ckpt", ckpt, "--vae_ckpt", other_vae, "--allow_mismatch"], "vae"),
                       (["--transformer_ckpt", ckpt, "--precision", {"fp32": "bf16"}.get(held, "fp32")], "drawn in")):
        code, _, err = generate(*args, "--num_samples", 2000, "--out", out, "--format", "npz")
        assert code == 2 and err.count("\n") == 1 and name in err, (args, err)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert all((out / "codes" / n).stat().st_mtime_ns == t for n, t in marks.items())  # not redone
    index = np.concatenate([np.load(p) for p in (out / "codes").glob("index-*.npy")])
    assert sorted(index.tolist()) == list(range(2000))  # every index exactly once
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 2000, "--batch_size", 64, "--format", "npz",
                    "--out", tmp_path / "clean")[0] == 0
    with np.load(out / "samples.npz") as resumed, np.load(tmp_path / "clean" / "samples.npz") as clean:
        assert sorted(resumed.files) == sorted(clean.files) == ["arr_0", "codes", "images", "index", "labels"]
        assert all(np.array_equal(resumed[k], clean[k]) for k in clean.files)  # an exact copy
    assert json.loads((out / "manifest.json").read_text())["precision"] == held


def test_one_command_with_key_value_draws_what_the_seed_flags_draw(tmp_path):
    """`arplatform generate key=value …` (the console script, every command's style) and
    `python -m arplatform generate --flag value …` (the seed's flags, kept as aliases) are one
    command: the same images; an unknown key is one line and exit 2."""
    import shutil

    from helpers import run_main

    from arplatform import cli

    ckpt, codebook, vae = write_models(tmp_path / "m")
    code, _, err = generate("--transformer_ckpt", ckpt, "--codebook_pt", codebook, "--num_samples", 6, "--seed", 3,
                            "--temperature", 0.7, "--out", tmp_path / "flags")
    assert code == 0, err
    command = shutil.which("arplatform", path=os.path.dirname(sys.executable))
    assert command, "the arplatform console script is not installed beside this Python"
    proc = subprocess.run([command, "generate", f"transformer_ckpt={ckpt}", f"codebook_pt={codebook}",
                           "num_samples=6", "seed=3", "sample.temperature=0.7", f"out={tmp_path / 'keys'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(images(tmp_path / "keys")[0], images(tmp_path / "flags")[0])
    code, _, err = generate(f"transformer_ckpt={ckpt}", "sample.temprature=0.7", "--out", tmp_path / "x")
    assert code == 2 and err.startswith("error: sample.temprature: not a key") and err.count("\n") == 1, err
    code, _, err = generate(f"transformer_ckpt={ckpt}", "num_samples=4", "oops", "--out", tmp_path / "x")
    assert code == 2 and err == "error: oops: expected key=value or --flag value\n", err  # never silently ignored
    help_text = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60).stdout
    for name in ("tokenize", "train", "tune", "tune-sampler", "generate", "evaluate", "pipeline"):
        assert f"\n  {name} " in help_text, help_text
    # the console script's own function, in this process (the script itself ran above)
    code, err = run_main(cli.main, ["trian"])
    assert code == 2 and "unknown command 'trian'" in err
    for args in (["generate", "--num_samples", "abc"], ["train", "--bogus"], ["evaluate", "samples"]):
        code, err = run_main(cli.main, args)
        assert code == 2 and err.startswith("error: "), err  # argparse's too:
        assert err.count("\n") == 1, err  # one line, not its usage first


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_images(tmp_path, ray_cluster):
    ckpt, _, _ = write_models(tmp_path / "m")
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 12, "--out", tmp_path / "local")[0] == 0
    env = job_env(ray_cluster)
    proc = subprocess.run([sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt", ckpt, "--num_samples",
                           "12", "--batch_size", "5", "--engine", "ray", "--actors", "2", "--cpus_per_actor", "0.5",
                           "--out", str(tmp_path / "ray")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 actor(s)" in proc.stdout and "12/12 images" in proc.stdout
    assert np.array_equal(images(tmp_path / "ray")[0], images(tmp_path / "local")[0])


@pytest.mark.slow
def test_a_refused_ray_generate_leaves_no_folder(tmp_path, ray_cluster):
    """Refused after its folder was locked (the actors' CPUs are checked against the cluster
    once Ray is up): no empty folder with a lock and a manifest is left behind."""
    ckpt, _, _ = write_models(tmp_path / "m")

    def refused(actors: int, cpus: float) -> str:
        """The one error line of a Ray generate of `actors` × `cpus`; nothing left behind."""
        proc = subprocess.run([sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt", ckpt,
                               "--num_samples", "4", "--engine", "ray", "--actors", str(actors), "--cpus_per_actor",
                               str(cpus), "--out", str(tmp_path / "s")], env=job_env(ray_cluster),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and not (tmp_path / "s").exists(), proc.stderr[-2000:]
        return proc.stderr.strip()

    assert "actors: 64 actors" in refused(64, 1)
    # CPUs are not the only bound: 4,000 actors of 0.0005 CPU each would take about 1.2 TB of memory
    line = refused(4000, 0.0005)
    assert line.startswith("error: actors: 4000 actors × "), line[-2000:]
    assert "of memory but the cluster has" in line and "at most" in line and "\n" not in line
    # nor memory: 40 actors of 0.05 CPU fit both, and would be 40 processes queueing for the cores (#20)
    line = refused(40, 0.05)
    assert line.startswith("error: actors: 40 actor processes"), line[-2000:]
    assert "at most one per core" in line and "\n" not in line


def test_wrong_or_mismatched_models_are_one_line(tmp_path):
    ckpt, codebook, vae = write_models(tmp_path / "m")
    _, other_codebook, other_vae = write_models(tmp_path / "o", k=32, latent=6)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (["--transformer_ckpt", tmp_path / "missing.pt"], "missing.pt"),
        (["--transformer_ckpt", garbage], "garbage.pt"),
        (["--transformer_ckpt", vae], "vae.pt"),
        (["--transformer_ckpt", ckpt, "--codebook_pt", other_codebook], "codebook"),
        (["--transformer_ckpt", ckpt, "--vae_ckpt", other_vae], "latent_dim"),
        (["--transformer_ckpt", ckpt, "--classes", "7"], "classes"),
        (["--transformer_ckpt", ckpt, "--classes", "a,b"], "classes"),
        (["--transformer_ckpt", ckpt, "--format", "gif"], "format"),
        (["--transformer_ckpt", ckpt, "--num_samples", 0], "num_samples"),
        (["--transformer_ckpt", ckpt, "--top_p", 2], "top_p"),
        (["--transformer_ckpt", ckpt, "--engine", "spark"], "engine"),
        (["--transformer_ckpt", ckpt, "--precision", "fp8"], "precision"),
    ]
    for args, name in cases:
        code, _, err = generate(*args, "--out", tmp_path / "never")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], (args, err)
    assert not (tmp_path / "never").exists()
    # a folder of one checkpoint's samples is not mixed with another setting
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", tmp_path / "s")[0] == 0
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", tmp_path / "s", "--seed", 9)
    assert code == 2 and "settings" in err


def test_sampler_json_applies_only_to_the_checkpoint_it_was_tuned_on(tmp_path):
    """A sweep's sampler.json records the checkpoint's SHA-256; beside a checkpoint that was
    replaced since (a new run published), its settings are not used."""
    import json

    from arplatform.core.io import file_sha256 as sha256
    from arplatform.jobs.sampling import tuned_sampler_settings

    ckpt, _, _ = write_models(tmp_path / "m")
    tuned = {"sample": {"temperature": 0.5, "top_k": 4, "top_p": None, "cfg_scale": 3.0}}
    (tmp_path / "m" / "sampler.json").write_text(json.dumps(tuned | {"checkpoint_sha256": sha256(ckpt)}))
    assert tuned_sampler_settings(ckpt) == tuned["sample"]
    write_models(tmp_path / "m", seed=1)  # a new checkpoint at the same path
    assert tuned_sampler_settings(ckpt) == {}
    code, log, err = generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", tmp_path / "s")
    assert code == 0 and "tuned on another checkpoint" in err, err
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["settings"]["cfg_scale"] != 3.0


def test_a_codebook_or_vae_other_than_the_trained_one_is_refused(tmp_path):
    """A checkpoint records the SHA-256 of the codebook and VAE it trained with; another codebook
    or VAE of the very same shape (another tokenizer run) decodes wrong images, so it is refused in
    one line unless --allow_mismatch; the samples' manifest records all three identities."""
    from arplatform.core.io import file_sha256 as sha256

    ckpt, codebook, vae = write_models(tmp_path / "m")
    _, other_codebook, other_vae = write_models(tmp_path / "other", seed=1)  # same shapes, other weights
    model, layout, saved = load_model(ckpt)
    save_checkpoint(ckpt, model, layout, grid_shape=saved["grid_shape"], train_config=saved["train_config"] | {
        "codebook_sha256": sha256(codebook), "vae_sha256": sha256(vae)})
    common = ("--transformer_ckpt", ckpt, "--num_samples", 4, "--batch_size", 4)
    code, _, err = generate(*common, "--codebook_pt", other_codebook, "--out", tmp_path / "a")
    assert code == 2 and f"{other_codebook}: not the codebook {ckpt} was trained with" in err, err
    assert "--allow_mismatch" in err and err.strip().count("\n") == 0 and not (tmp_path / "a").exists()
    code, _, err = generate(*common, "--vae_ckpt", other_vae, "--out", tmp_path / "b")
    assert code == 2 and f"{other_vae}: not the VAE {ckpt} was trained with" in err, err
    code, _, err = generate(*common, "--codebook_pt", other_codebook, "--allow_mismatch", "--out", tmp_path / "c")
    assert code == 0, err
    code, _, err = generate(*common, "--out", tmp_path / "d")  # the trained ones, found from the checkpoint
    assert code == 0, err
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert (manifest["checkpoint_sha256"], manifest["codebook_sha256"], manifest["vae_sha256"]) == (
        sha256(ckpt), sha256(codebook), sha256(vae))


def test_samplers_load_the_bytes_the_driver_checked(tmp_path):
    """A checkpoint replaced after the driver checked it (a finishing run renames a new best.pt
    over the old) is refused by every sampler instead of drawing images the manifest does not
    describe; `Location.pinned` loads from a private copy made in the read that hashed it."""
    from arplatform.core.errors import CheckpointError
    from arplatform.core.io import file_sha256 as sha256
    from arplatform.distributed.image_sampler import ImageSampler
    from arplatform.jobs.generation import sampler_spec
    from arplatform.jobs.sampling import resolve_models
    from arplatform.outputs.storage import Location

    ckpt, codebook, vae = write_models(tmp_path / "m")
    cfg = GenerateConfig(transformer_ckpt=ckpt, num_samples=2)
    models = resolve_models(cfg)
    spec = sampler_spec(cfg, models, str(tmp_path / "s"))
    assert spec["transformer_sha256"] == sha256(ckpt)
    ImageSampler(spec)  # the same bytes: loads
    new, _, _ = write_models(tmp_path / "new", seed=1)
    os.replace(new, ckpt)  # what publishing a finished run does to the seed's path
    with pytest.raises(CheckpointError, match=r"best.pt: changed since this run checked it"):
        ImageSampler(spec)
    with Location(ckpt).pinned() as (copy, digest):
        os.replace(codebook, ckpt)  # replaced while pinned: the copy still holds what was hashed
        assert digest == sha256(copy) != sha256(ckpt)
    assert not os.path.exists(copy)


def test_the_pipeline_draws_with_the_settings_generate_uses(tmp_path):
    """After a sampler sweep, the pipeline and `generate` draw one checkpoint with the same
    settings: the checkpoint's training config, then the sampler.json tuned on it."""
    from arplatform.cli import compose
    from arplatform.cli.pipeline import generate_config, stage_configs
    from arplatform.config import PipelineConfig, from_dict
    from arplatform.core.io import file_sha256 as sha256
    from arplatform.jobs.sampling import checkpoint_sampling

    ckpt, _, _ = write_models(tmp_path / "m")
    tuned = {"temperature": 0.5, "top_k": 4, "top_p": None, "cfg_scale": 3.0}
    (tmp_path / "m" / "sampler.json").write_text(json.dumps({"sample": tuned, "checkpoint_sha256": sha256(ckpt)}))
    cfg = from_dict(PipelineConfig, compose("pipeline/mnist_sample", [f"output_root={tmp_path / 'root'}"]))
    _, job = stage_configs(cfg)
    gen = generate_config(cfg, job, ckpt, str(tmp_path / "s"), str(tmp_path / "root"))
    assert gen.sample == {} and {k: checkpoint_sampling(ckpt, gen.sample)[k] for k in tuned} == tuned
    code, _, err = generate("--transformer_ckpt", ckpt, "--num_samples", 2, "--out", tmp_path / "g")
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert code == 0 and {k: manifest["settings"][k] for k in tuned} == tuned, err
    # a setting the user gives explicitly wins over sampler.json, as a flag of generate does
    import dataclasses

    explicit = dataclasses.replace(cfg, train_overrides=["sample.cfg_scale=1.5"])
    gen = generate_config(explicit, stage_configs(explicit)[1], ckpt, str(tmp_path / "s"), str(tmp_path / "root"))
    assert gen.sample == {"cfg_scale": 1.5} and checkpoint_sampling(ckpt, gen.sample)["temperature"] == 0.5


def test_one_precedence_from_the_command_line_and_from_python(tmp_path):
    """The defaults < the checkpoint's own `sample:` < its sampler.json (tuned on these bytes) <
    what a person set: `run_generate` from Python draws as the command does, and the manifest
    records the settings drawn with."""
    from arplatform.config import GenerateConfig, from_dict
    from arplatform.core.io import file_sha256 as sha256
    from arplatform.stages.generate import run_generate

    ckpt, _, _ = write_models(tmp_path / "m", sample={"temperature": 0.7, "cfg_scale": 1.5, "num_samples": 8})

    def drawn(out):
        return json.loads((tmp_path / out / "manifest.json").read_text())["settings"]

    run_generate(from_dict(GenerateConfig, {"transformer_ckpt": ckpt, "num_samples": 2, "out": str(tmp_path / "py")}))
    assert drawn("py")["temperature"] == 0.7 and drawn("py")["cfg_scale"] == 1.5 and drawn("py")["top_k"] == 64
    assert generate(f"transformer_ckpt={ckpt}", "num_samples=2", f"out={tmp_path / 'cli'}")[0] == 0
    assert drawn("cli") == drawn("py")
    (tmp_path / "m" / "sampler.json").write_text(json.dumps({"sample": {"cfg_scale": 2.5},
                                                             "checkpoint_sha256": sha256(ckpt)}))
    code, log, _ = generate(f"transformer_ckpt={ckpt}", "num_samples=2", "--temperature", "0.9",
                            f"out={tmp_path / 'tuned'}")
    assert code == 0 and drawn("tuned")["cfg_scale"] == 2.5 and drawn("tuned")["temperature"] == 0.9
    assert "temperature 0.9 (given)" in log and "cfg_scale 2.5," in log  # the log says what was drawn with
    assert generate(f"transformer_ckpt={ckpt}", "num_samples=2", "sample.cfg_scale=3",
                    f"out={tmp_path / 'given'}")[0] == 0
    assert drawn("given")["cfg_scale"] == 3.0 and drawn("given")["temperature"] == 0.7
    code, _, err = generate(f"transformer_ckpt={ckpt}", "sample.beam=3", f"out={tmp_path / 'bad'}")
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "bad").exists(), err
    assert drawn("given")["cfg_schedule"] == "constant"  # (the default: no checkpoint or sampler.json names one)
    assert generate(f"transformer_ckpt={ckpt}", "num_samples=2", "--cfg_schedule", "linear",
                    f"out={tmp_path / 'linear'}")[0] == 0
    assert drawn("linear")["cfg_schedule"] == "linear" and drawn("linear")["cfg_scale"] == 2.5
    code, _, err = generate(f"transformer_ckpt={ckpt}", "--cfg_schedule", "cosine", f"out={tmp_path / 'bad'}")
    assert code == 2 and "sample.cfg_schedule: 'cosine' is not one of constant, linear" in err, err


def test_tar_and_npz_formats_hold_the_same_images_and_resume(tmp_path):
    """format=tar (a WebDataset-style tar of PNGs per batch) and npz (an array per batch) write a
    file per batch, not per image; the images are the PNG format's, a rerun with more samples
    draws only the rest, and a folder keeps its format."""
    import tarfile

    from PIL import Image

    ckpt, _, _ = write_models(tmp_path / "m")
    assert generate("--transformer_ckpt", ckpt, "--num_samples", 10, "--batch_size", 4, "--out",
                    tmp_path / "png")[0] == 0
    expected = images(tmp_path / "png")[0]
    for fmt in ("tar", "npz"):
        out = tmp_path / fmt
        assert generate(f"transformer_ckpt={ckpt}", "num_samples=6", "batch_size=4", f"format={fmt}",
                        f"out={out}")[0] == 0
        code, log, err = generate(f"transformer_ckpt={ckpt}", "num_samples=10", "batch_size=4", f"format={fmt}",
                                  f"out={out}")
        assert code == 0 and "6 already written, 4 to draw" in log, err
        assert np.array_equal(images(out)[0], expected)
        shards = sorted(os.listdir(out / "images"))
        assert shards == [f"images-0000000-4.{'tar' if fmt == 'tar' else 'npy'}",
                          f"images-0000004-2.{'tar' if fmt == 'tar' else 'npy'}",
                          f"images-0000006-4.{'tar' if fmt == 'tar' else 'npy'}"]
        code, _, err = generate(f"transformer_ckpt={ckpt}", "num_samples=12", f"out={out}")  # png into a tar folder
        assert code == 2 and "another settings" in err, err
    with tarfile.open(tmp_path / "tar" / "images" / "images-0000004-2.tar") as tar:
        assert tar.getnames() == ["000004.png", "000005.png"]
        first = np.asarray(Image.open(tar.extractfile("000004.png")))
    assert np.array_equal(first, expected[4])

    # samples.npz as ADM's evaluator reads a sample batch (its NpzArrayReader: the arr_0.npy member's
    # header, then the uint8 NHWC array), and as LlamaGen's and VAR's scripts load it
    import zipfile

    path = tmp_path / "npz" / "samples.npz"
    with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
        version = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = header(member)
    assert shape == (10, *expected.shape[1:], 3) and not fortran_order and dtype == np.uint8
    with np.load(path) as z:
        assert np.array_equal(z["arr_0"], np.repeat(expected[..., None], 3, axis=-1))  # grey, repeated


@pytest.mark.slow
def test_a_checkpoint_changed_under_the_ray_actors_is_one_line(tmp_path, ray_cluster):
    """The driver checked the checkpoint; it is replaced before the actors load it: the actors
    refuse it (SHA-256), and the user reads that one line, not Ray's actor traceback (N16)."""
    ckpt, _, _ = write_models(tmp_path / "m")
    other, _, _ = write_models(tmp_path / "o", seed=1)
    proc = subprocess.Popen([sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt", ckpt,
                             "--num_samples", "8", "--engine", "ray", "--actors", "1", "--cpus_per_actor", "1",
                             "--out", str(tmp_path / "s")], env=job_env(ray_cluster), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # bound and about to start its actors: swap the file
        if "to draw (ray engine)" in line:
            os.replace(other, ckpt)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "changed since this run checked it" in last, err[:2500]
    # (Ray's own C++ warning about constructor arguments comes with every Ray Data actor pool)
    assert "Traceback" not in err and "ActorDiedError" not in err and err.count("error: ") == 1, err[:2500]


def test_the_seed_flags_are_keys_rewritten_at_the_edge():
    """`generate --flag value` is `key=value` composed by Hydra like every command: any value a
    shell passes arrives unchanged (quoted for Hydra's grammar where it must be), a sampling flag
    is a key of `sample:` holding only what was set, and a switch is `key=true`."""
    from arplatform.cli import flags_to_overrides
    from arplatform.cli.generate import ALIASES, SAMPLE_KEYS, build
    from arplatform.config import CONFIG_DIR

    for value in ("0,2", "a b/c", "it's", "back\\slash", "x\\", "a\\'b", "[1]", "k=v", "ünï", "models:/m@best",
                  "s3://b/k", "~/x", "007", "1e3", "null"):
        cfg = build("generate/base", flags_to_overrides(["--out", value, "--classes=3,5"], ALIASES), CONFIG_DIR)
        assert cfg.out == value and cfg.classes == "3,5"
    flags = ["--temperature", "0.7", "--top_k", "0", "--allow-mismatch", "--num-samples", "7"]
    cfg = build("generate/base", flags_to_overrides(flags, ALIASES, ("--allow_mismatch",), SAMPLE_KEYS), CONFIG_DIR)
    assert cfg.sample == {"temperature": 0.7, "top_k": None} and cfg.allow_mismatch is True and cfg.num_samples == 7
    assert build("generate/base", [], CONFIG_DIR).sample == {}  # nothing set: the checkpoint's own, all of them
