"""Bad input, table-driven: every case ends in one line naming the key or file, exit code 2
(for the commands), and nothing written or changed on disk.

Commands run in-process through their `main(argv)` (the same code path as `python -m`, minus
the interpreter start-up); `test_cli_subprocess_spot_checks` runs a few as real processes.
"""

import io
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from helpers import run_main
from PIL import Image

from arplatform.cli import evaluate as evaluate_cli
from arplatform.cli import tokenize as tokenize_cli
from arplatform.cli import train as train_cli
from arplatform.cli import tune as tune_cli
from arplatform.core.codebook import save_codebook

# -- files the cases point at ---------------------------------------------------------


def _npy_with_header(path, shape, dtype="<i8", payload=b""):
    """A .npy whose header claims `shape`, followed by `payload` only."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}".encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload)


def _png(path, size=(28, 28), cut=None):
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data[:cut] if cut else data)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {}
    _npy_with_header(d / "huge.npy", (10**12, 49))  # 64 bytes claiming 357 TiB
    f["huge"] = d / "huge.npy"
    np.save(d / "floats.npy", np.zeros((10, 16), dtype=np.float32))
    f["floats"] = d / "floats.npy"
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    f["obj"] = d / "obj.npy"
    np.save(d / "good.npy", np.zeros((20, 16), dtype=np.int64))
    open(d / "trunc.npy", "wb").write(open(d / "good.npy", "rb").read()[:150])
    f["trunc"] = d / "trunc.npy"
    f["good"] = d / "good.npy"
    np.save(d / "big_label.npy", np.array([0, 10**12] * 10, dtype=np.int64))
    f["big_label"] = d / "big_label.npy"
    np.save(d / "one_d.npy", np.zeros(16, dtype=np.int64))
    f["one_d"] = d / "one_d.npy"
    open(d / "text.npy", "w").write("not numpy at all")
    f["text"] = d / "text.npy"
    # image datasets
    for name in ("bomb", "cut", "loop", "escape"):
        os.makedirs(d / name / "a")
    for i in range(3):
        _png(d / "bomb" / "a" / f"{i}.png")
    _png(d / "bomb" / "a" / "big.png", size=(10000, 10000))  # ~12 KB of PNG, 10^8 pixels
    _png(d / "cut" / "a" / "0.png", cut=60)  # cut after its header
    _png(d / "loop" / "a" / "0.png")
    os.symlink(d / "loop" / "b", d / "loop" / "b")  # a link to itself
    _png(d / "escape" / "a" / "0.png")
    os.symlink("/etc", d / "escape" / "outside")
    f.update({k: d / k for k in ("bomb", "cut", "loop", "escape")})
    with zipfile.ZipFile(d / "forged.npz", "w") as z:
        buf = io.BytesIO()
        _npy_with_header(d / "tmp.npy", (10**9, 28, 28), "|u1")
        z.write(d / "tmp.npy", "images.npy")
        del buf
    f["forged_npz"] = d / "forged.npz"
    np.savez(d / "labels12.npz", images=np.zeros((4, 28, 28), np.uint8), labels=np.array([0, 1, 2, 10**12]))
    f["labels12_npz"] = d / "labels12.npz"
    # a tokenizer output folder with broken JSON files
    good = '"name": "m", "data": {"dataset": "mnist_sample"}'
    for name, cfg, split in (("badjson", "{not json", '{"val_indices": [0]}'),
                             ("negsplit", "{" + good + "}", '{"val_indices": [-3, 1]}'),
                             ("strsplit", "{" + good + "}", '{"val_indices": "all"}'),
                             ("badkey", "{" + good + ', "vae": {"epochs": 0}}', '{"val_indices": [0]}')):
        os.makedirs(d / name)
        save_codebook(d / name / "codebook.pt", torch.randn(8, 4), {"vae_checkpoint": "nowhere.pt"})
        (d / name / "tokenizer_config.json").write_text(cfg)
        (d / name / "split.json").write_text(split)
        f[name] = d / name
    # checkpoints with wrong plain-data fields
    from arplatform import GPT, GPTConfig, TokenLayout, save_checkpoint

    layout = TokenLayout(16, 2)
    good = save_checkpoint(d / "ok.pt", GPT(GPTConfig(layout.vocab_size, 8, 16, 1, 2)), layout, grid_shape=(4, 4))
    ck = torch.load(good, weights_only=True)
    for name, key, value in (("str_layout", "layout", {"num_codes": "16", "num_classes": 2}),
                             ("bad_grid", "grid_shape", ["4", None]), ("neg_step", "step", -4),
                             ("cfg_list", "model_config", [1, 2])):
        torch.save(dict(ck, **{key: value}), d / f"{name}.pt")
        f[name] = d / f"{name}.pt"
    return f


# -- the table ------------------------------------------------------------------------

TRAIN = "transformer/mnist_sample"
TOK = "tokenizer/mnist_sample"
TUNE = "tune/mnist_sample"

# (command, config name or None, args, what the one line must name)
CLI_CASES = [
    ("train", TRAIN, ["optim.lr=inf"], "optim.lr"),
    ("train", TRAIN, ["run_name=${{oc.env:AWS_SECRET_ACCESS_KEY}}"], "run_name: ${oc.env:…} is refused"),
    ("tune", TUNE, ["train.run_name=${{oc.env:HOME}}"], "run_name: ${oc.env:…} is refused"),
    ("train", TRAIN, ["optim.lr=nan"], "optim.lr"),
    ("train", TRAIN, ["optim.beta1=5"], "optim.beta1"),
    ("train", TRAIN, ["optim.weight_decay=-1"], "optim.weight_decay"),
    ("train", TRAIN, ["optim.grad_clip=-1"], "optim.grad_clip"),
    ("train", TRAIN, ["optim.batch_size=0"], "optim.batch_size"),
    ("train", TRAIN, ["optim.epochs=-2"], "optim.epochs"),
    ("train", TRAIN, ["optim.class_dropout=1.5"], "optim.class_dropout"),
    ("train", TRAIN, ["optim.precision=fp8"], "optim.precision"),
    ("train", TRAIN, ["model.dropout=1.5"], "model.dropout"),
    ("train", TRAIN, ["model.seq_len=-5"], "model.seq_len"),
    ("train", TRAIN, ["model.num_heads=3"], "num_heads"),
    ("train", TRAIN, ["model.embed_dim=0"], "model.embed_dim"),
    ("train", TRAIN, ["trainer.max_failures=-1"], "trainer.max_failures"),
    ("train", TRAIN, ["trainer.checkpoints_to_keep=0"], "trainer.checkpoints_to_keep"),
    ("train", TRAIN, ["trainer.threads_per_worker=-1"], "trainer.threads_per_worker"),
    ("train", TRAIN, ["trainer.num_cpus=inf"], "trainer.num_cpus"),
    ("train", TRAIN, ["trainer.num_workers=0"], "trainer.num_workers"),
    ("train", TRAIN, ["trainer.cpus_per_worker=-0.5"], "trainer.cpus_per_worker"),
    ("train", TRAIN, ["sample.top_k=0"], "sample.top_k"),
    ("train", TRAIN, ["tracking.model_name=a b"], "tracking.model_name"),
    ("train", TRAIN, ["model.preset=XXL"], "model.preset"),
    ("train", TRAIN, ["optim.compile=yes"], "optim.compile"),
    ("train", TRAIN, ["model.preset=B", "model.num_heads=7"], "num_heads"),
    ("train", TRAIN, ["tracking.register=maybe"], "tracking.register"),
    ("train", TRAIN, ["sample.top_p=1.5"], "sample.top_p"),
    ("train", TRAIN, ["sample.temperature=-1"], "sample.temperature"),
    ("train", TRAIN, ["sample.cfg_scale=nan"], "sample.cfg_scale"),
    ("train", TRAIN, ["data.val_fraction=5"], "data.val_fraction"),
    ("train", TRAIN, ["data.num_codes=-1"], "data.num_codes"),
    ("train", TRAIN, ["data.invalid_codes=skip"], "data.invalid_codes"),
    ("train", TRAIN, ["name=.."], "name"),
    ("train", TRAIN, ["run_name=a/b"], "run_name"),
    ("train", TRAIN, ["optim.learning_rate=1"], "optim.learning_rate"),
    ("train", TRAIN, ["model.depth=3"], "model.depth"),
    ("train", "transformer/imagenet", [], "transformer/imagenet.yaml"),
    ("train", TRAIN, ["data.codebook_dir=null"], "data.codebook_dir"),
    ("train", TRAIN, ["data.codebook_dir={tmp}/missing"], "missing"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={huge}"], "huge.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={floats}"], "floats.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={obj}"], "obj.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={trunc}"], "trunc.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={text}"], "text.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={one_d}"], "one_d.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={good}", "data.labels={big_label}"], "big_label.npy"),
    ("train", TRAIN, ["data.codebook_dir=null", "data.codes={good}", "data.labels={good}"], "good.npy"),
    ("train", TRAIN, ["resume=true", "data.codebook_dir=null", "data.codes={good}"], "resume=true"),
    ("tokenize", TOK, ["vae.epochs=0"], "vae.epochs"),
    ("tokenize", TOK, ["engine=spark"], "engine"),
    ("tokenize", TOK, ["data.bad_images=ignore"], "data.bad_images"),
    ("tokenize", TOK, ["data.crop=left"], "data.crop"),
    ("tokenize", TOK, ["actors=0"], "actors"),
    ("tokenize", TOK, ["codebook.fit_images=0"], "codebook.fit_images"),
    ("tokenize", TOK, ["vae.lr=inf"], "vae.lr"),
    ("tokenize", TOK, ["vae.beta=-1"], "vae.beta"),
    ("tokenize", TOK, ["vae.downsample=6"], "vae.downsample"),
    ("tokenize", TOK, ["vae.res_blocks=-1"], "vae.res_blocks"),
    ("tokenize", TOK, ["vae.downsample=8", "data.image_size=36"], "vae.downsample=8"),
    ("tokenize", TOK, ["codebook.num_codes=100000"], "codebook.num_codes"),
    ("tokenize", TOK, ["codebook.num_codes=1"], "codebook.num_codes"),
    ("tokenize", TOK, ["data.limit=-5"], "data.limit"),
    ("tokenize", TOK, ["data.image_size=-3"], "data.image_size"),
    ("tokenize", TOK, ["data.channels=2"], "data.channels"),
    ("tokenize", TOK, ["device=bogus"], "device"),
    ("tokenize", TOK, ["device=cuda:7"], "device"),
    ("tokenize", TOK, ["shards=-1"], "shards"),
    ("tokenize", TOK, ["shards=9999", "data.limit=50"], "shards=9999"),
    ("tokenize", TOK, ["name="], "name"),
    ("tokenize", TOK, ["name=a/b"], "name"),
    ("tokenize", TOK, ["data.dataset=imagenet"], "data.dataset"),
    ("tokenize", TOK, ["data.dataset=folder", "data.data_dir={bomb}"], "big.png"),
    ("tokenize", TOK, ["data.dataset=folder", "data.data_dir={cut}"], "0.png"),
    ("tokenize", TOK, ["data.dataset=npz", "data.data_dir={forged_npz}"], "forged.npz"),
    ("tokenize", TOK, ["data.dataset=npz", "data.data_dir={labels12_npz}"], "labels12.npz"),
    ("tokenize", TOK, ["data.dataset=mnist", "data.data_dir={tmp}/nothing"], "train-images-idx3-ubyte.gz"),
    ("tune", TUNE, ["search.algorithm=hyperopt"], "search.algorithm"),
    ("tune", TUNE, ["search.max_concurrent_trials=0"], "search.max_concurrent_trials"),
    ("tune", TUNE, ["search.metric=train/loss"], "search.metric"),
    ("tune", TUNE, ["asha.reduction_factor=1"], "asha.reduction_factor"),
    ("tune", TUNE, ["trial_cpus=0"], "trial_cpus"),
    ("tune", TUNE, ["optim.lr=0.1"], "optim.lr: a key of the training job every trial runs; pass train.optim.lr=0.1"),
    ("tune", TUNE, ["sweep_name=../x"], "sweep_name"),
    ("tune", TUNE, ["train_config=transformer/nope"], "transformer/nope.yaml"),
    ("tune", TUNE, ["train.optim.lr=-1"], "optim.lr"),
    ("tune", TUNE, ["~space", "+space={{trainer: {{num_workers: {{grid: [1, 2]}}}}}}"], "space.trainer"),
    ("tune", TUNE, ["~space", "+space={{model: {{embed_dim: {{grid: [64, 30]}}}}}}"], "model.embed_dim=30"),
    ("tune", TUNE, ["~space", "+space={{model: {{embed_dim: {{range: [1, 2]}}}}}}"], "space.model.embed_dim"),
    ("tune", TUNE, ["~space", "+space={{optim: {{lr: {{loguniform: [0, 1]}}}}}}"], "space.optim.lr.loguniform"),
    ("tune", TUNE, ["~space", "+space={{optim: {{lr: {{uniform: [0.1, 0.01]}}}}}}"], "space.optim.lr.uniform"),
    ("tune", TUNE, ["~space", "+space={{model: {{depth: {{choice: [1, 2]}}}}}}"], "model.depth"),
    ("tune", TUNE, ["space.model.embed_dim.grid=[]"], "space.model.embed_dim"),
    ("tune", TUNE, ["space.optim.weight_decay={{uniform: [0.0, 0.2]}}"], "add one with '+space.optim.weight_decay=…'"),
    ("tune", TUNE, ["search.algorithm=optuna"], "space.model.embed_dim"),
    ("tune", TUNE, ["resume=true", "train.data.codebook_dir=null", "train.data.codes={good}"], "resume=true"),
    ("tune", TUNE, ["train.data.codebook_dir=null", "train.data.codes={floats}"], "floats.npy"),
    ("evaluate", None, ["--codebook-dir", "{badjson}"], "tokenizer_config.json"),
    ("evaluate", None, ["--codebook-dir", "{negsplit}"], "split.json"),
    ("evaluate", None, ["--codebook-dir", "{strsplit}"], "split.json"),
    ("evaluate", None, ["--codebook-dir", "{badkey}"], "vae.epochs"),
    ("evaluate", None, ["--codebook-dir", "{tmp}/none"], "codebook.pt"),
    ("evaluate", None, ["--codebook-dir", "{badkey}", "--device", "cuda:3"], "device"),
    ("evaluate", None, ["samples", "samples_dir={tmp}"], "not a samples folder arplatform generate wrote"),
    ("evaluate", None, ["samples", "samples_dir={tmp}/none"], "none: no such folder"),
]

MAINS = {"train": train_cli.main, "tokenize": tokenize_cli.main, "evaluate": evaluate_cli.main,
         "tune": tune_cli.main}


def _snapshot(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[p] = os.path.getsize(p) if os.path.isfile(p) else None
    return out


def _run_main(command, config, args, tmp_path, files):
    root = tmp_path / "out"
    os.makedirs(root / "transformer" / "mnist_sample" / "checkpoints", exist_ok=True)
    (root / "transformer" / "mnist_sample" / "checkpoints" / "best.pt").write_bytes(b"an earlier run's weights")
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    argv = ([] if config is None else ["--config-name", config]) + [a.format(**names) for a in args]
    if command != "evaluate":
        argv.append(f"{'train.' if command == 'tune' else ''}output_root={root}")
    before = _snapshot(tmp_path)
    code, err = run_main(MAINS[command], argv)
    return code, err, before, _snapshot(tmp_path)


@pytest.mark.parametrize("command,config,args,names", CLI_CASES,
                         ids=[f"{c}:{' '.join(a)}" for c, _, a, _ in CLI_CASES])
def test_command_refuses_bad_input(command, config, args, names, tmp_path, files):
    code, err, before, after = _run_main(command, config, args, tmp_path, files)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0], lines[0]
    assert after == before, "files were written or changed"


# -- the core API and the file readers ---------------------------------------------------


def _gpt(vocab=23):
    from arplatform import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab, 8, 16, 1, 2))


def _api_cases(files):
    from arplatform import (
        CodeSequenceDataset,
        TokenLayout,
        decode_codes_to_images,
        generate_autoregressive,
        load_checkpoint,
        load_model,
        pad_collate,
        sample_next_token,
    )
    from arplatform.config import ImageDataConfig
    from arplatform.core.codebook import load_codebook
    from arplatform.core.vae import VAE, VAEConfig
    from arplatform.data.datasets import load_images

    lay = TokenLayout(16, 2)
    vae = VAE(VAEConfig(1, 16, 4, 8))
    gen = generate_autoregressive
    return [
        ("generate: cfg_scale nan", lambda: gen(_gpt(), lay, 4, class_labels=torch.tensor([0]), cfg_scale=float("nan")),
         "cfg_scale"),
        ("generate: temperature nan", lambda: gen(_gpt(), lay, 4, num_samples=1, temperature=float("nan")),
         "temperature"),
        ("generate: num_positions 0", lambda: gen(_gpt(), lay, 0, num_samples=2), "num_positions"),
        ("generate: num_positions -3", lambda: gen(_gpt(), lay, -3, num_samples=2), "num_positions"),
        ("generate: float labels", lambda: gen(_gpt(), lay, 4, class_labels=torch.tensor([0.7, 1.2])), "class_labels"),
        ("generate: label out of range", lambda: gen(_gpt(), lay, 4, class_labels=torch.tensor([5])), "class labels"),
        ("generate: vocab mismatch", lambda: gen(_gpt(40), lay, 4, num_samples=1), "vocabulary"),
        ("generate: top_k 0", lambda: gen(_gpt(), lay, 4, num_samples=1, top_k=0), "top_k"),
        ("generate: num_samples 0", lambda: gen(_gpt(), lay, 4, num_samples=0), "num_samples"),
        ("sample_next_token: top_p 0", lambda: sample_next_token(torch.zeros(1, 5), top_p=0.0), "top_p"),
        ("pad_collate: float ids", lambda: pad_collate([{"input_ids": torch.tensor([1.5, 2.0]),
                                                         "labels": torch.tensor([1, 2])}], 0), "input_ids"),
        ("decode: str codes", lambda: decode_codes_to_images(np.array([["a"] * 16]), torch.randn(8, 4), vae),
         "integers"),
        ("decode: object codes", lambda: decode_codes_to_images(np.array([[None] * 16]), torch.randn(8, 4), vae),
         "integers"),
        ("decode: complex codes", lambda: decode_codes_to_images(np.ones((1, 16), complex), torch.randn(8, 4), vae),
         "integers"),
        ("decode: batch_size 0", lambda: decode_codes_to_images(np.zeros((1, 16), int), torch.randn(8, 4), vae,
                                                                batch_size=0), "batch_size"),
        ("codebook dict without vectors", lambda: load_codebook({"config": {}}), "z_medoid"),
        ("codebook of strings", lambda: load_codebook({"z_medoid": "abc"}), "codebook"),
        ("dataset: huge header", lambda: CodeSequenceDataset(files["huge"], layout=lay), "huge.npy"),
        ("dataset: pickled objects", lambda: CodeSequenceDataset(files["obj"], layout=lay), "obj.npy"),
        ("dataset: float labels", lambda: CodeSequenceDataset(files["good"], np.full(20, 1.5), layout=lay), "labels"),
        ("dataset: label 10^12", lambda: CodeSequenceDataset(files["good"], files["big_label"]), "big_label.npy"),
        ("checkpoint: str layout", lambda: load_checkpoint(files["str_layout"]), "str_layout.pt"),
        ("checkpoint: bad grid", lambda: load_checkpoint(files["bad_grid"]), "bad_grid.pt"),
        ("checkpoint: negative step", lambda: load_checkpoint(files["neg_step"]), "neg_step.pt"),
        ("checkpoint: config list", lambda: load_model(files["cfg_list"]), "cfg_list.pt"),
        ("images: symlink loop", lambda: load_images(ImageDataConfig("folder", str(files["loop"]))), None),
        ("images: link outside", lambda: load_images(ImageDataConfig("folder", str(files["escape"]))), None),
    ]


def test_core_api_and_readers_refuse_bad_input(files, tmp_path):
    from arplatform.core.errors import CheckpointError, DataError

    failures = []
    cases = _api_cases(files)
    for name, call, needle in cases:
        before = _snapshot(tmp_path)
        if needle is None:  # links that loop or leave the root: skipped with a warning, the rest loads
            with pytest.warns(UserWarning, match="skipped, a link that loops, dangles or leads outside"):
                data = call()
            if len(data) != 1:
                failures.append(f"{name}: expected only the one real image, got {len(data)}")
            continue
        try:
            call()
            failures.append(f"{name}: no error")
        except (ValueError, DataError, CheckpointError) as e:
            text = str(e)
            if "\n" in text.strip() or needle not in text:
                failures.append(f"{name}: {text!r} does not name {needle!r} in one line")
        if _snapshot(tmp_path) != before:
            failures.append(f"{name}: wrote files")
    assert not failures, "\n".join(failures)
    assert len(cases) + len(CLI_CASES) >= 40


def test_cli_subprocess_spot_checks(tmp_path, files):
    """The real entry points: one line on stderr, exit 2, before Ray or any training starts."""
    for args, needle in ((["-m", "arplatform", "train", "optim.lr=inf"], "optim.lr"),
                         (["-m", "arplatform", "tokenize", "data.limit=-5"], "data.limit"),
                         (["-m", "arplatform", "train", "data.codebook_dir=null", f"data.codes={files['huge']}",
                           f"output_root={tmp_path}"], "huge.npy")):
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "transformer").exists()


@pytest.mark.parametrize("command,args", [("train", ["output_root="]), ("tokenize", ["output_root=' '"]),
                                          ("tune", ["train.output_root="]), ("pipeline", ["output_root="])])
def test_an_empty_output_root_is_refused(command, args, tmp_path, monkeypatch):
    """Empty would mean the current directory, wherever the command runs (here an empty folder)."""
    from arplatform.cli import pipeline as pipeline_cli

    monkeypatch.chdir(tmp_path)
    code, err = run_main((MAINS | {"pipeline": pipeline_cli.main})[command], args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "output_root" in lines[0] and "empty" in lines[0], err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("key", ["output_root", "transformer_ckpt"])
def test_sampler_sweep_refuses_uris_in_one_line(key, tmp_path, monkeypatch):
    """The sampler sweep reads and writes local files only: a bucket URI is refused before any
    work, instead of becoming a folder named `s3:` under the current directory."""
    from arplatform.cli import tune_sampler as sampler_cli

    monkeypatch.chdir(tmp_path)
    code, err = run_main(sampler_cli.main, ["--config-name", "sampler_tune/mnist_sample",
                                            f"{key}=s3://bucket/prefix/best.pt"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and key in lines[0] and "URI" in lines[0], err
    assert os.listdir(tmp_path) == []
