"""kind=vq: LlamaGen's pretrained VQ tokenizer, from its checkpoint format to generated images.

The published vq_ds16_c2i.pt is not here (no network), so the tests save small random-weights
models with the same key layout, in the same file format ({"model": state_dict, "args":
argparse.Namespace, …}), and VQ-16's own layout is compared key for key with LlamaGen's."""

import argparse
import datetime
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import job_env, photo_crops, run_main

from arplatform.core.checkpoint import load_checkpoint
from arplatform.core.codebook import load_codebook_file
from arplatform.core.decode import decode_codes_to_images
from arplatform.core.errors import CheckpointError
from arplatform.core.vae import load_vae
from arplatform.core.vq import VQ, VQConfig, load_llamagen_vq

# sha256 of "key (shape)" lines, sorted, of LlamaGen's `VQ_16()` state dict
# (tokenizer/tokenizer_image/vq_model.py): 344 tensors
LLAMAGEN_VQ16_LAYOUT = "accd1f4a11c789540fcb7d16f9617ee4277941806809f1495711d0a13b7309f9"
TINY = dict(codebook_size=64, codebook_embed_dim=4, encoder_ch_mult=[1, 1, 2], decoder_ch_mult=[1, 1, 2],
            z_channels=32, channels=32)
TINY_FLAGS = ["vq.codebook_size=64", "vq.codebook_embed_dim=4", "vq.encoder_ch_mult=[1,1,2]",
              "vq.decoder_ch_mult=[1,1,2]", "vq.z_channels=32", "vq.channels=32"]


def save_llamagen_file(path, cfg: VQConfig, seed: int = 0, **extra) -> str:
    """A checkpoint as LlamaGen's vq_train.py writes it."""
    torch.manual_seed(seed)
    torch.save({"model": VQ(cfg).state_dict(), "args": argparse.Namespace(vq_model="VQ-16", codebook_size=64),
                "steps": 0, **extra}, path)
    return str(path)


def test_vq16_has_llamagens_state_dict_layout():
    with torch.device("meta"):
        state = VQ(VQConfig()).state_dict()
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sorted(state.items()))
    assert len(state) == 344 and hashlib.sha256(lines.encode()).hexdigest() == LLAMAGEN_VQ16_LAYOUT
    assert state["quantize.embedding.weight"].shape == (16384, 8) and VQConfig().grid_size == 16


def test_the_file_format_loads_its_namespace_and_nothing_else(tmp_path):
    cfg = VQConfig(**TINY, image_size=8)
    path = save_llamagen_file(tmp_path / "vq.pt", cfg)
    vq = load_llamagen_vq(path, cfg, hashlib.sha256(open(path, "rb").read()).hexdigest())
    torch.manual_seed(0)
    assert torch.equal(vq.quantize.embedding.weight, VQ(cfg).quantize.embedding.weight)
    with pytest.raises(CheckpointError, match="is not the"):
        load_llamagen_vq(path, cfg, "0" * 64)
    other = tmp_path / "other.pt"
    torch.save({"model": VQ(cfg).state_dict(), "args": datetime.date(2024, 6, 1)}, other)  # not a Namespace
    with pytest.raises(CheckpointError, match="refused to load"):
        load_llamagen_vq(other, cfg)
    with pytest.raises(CheckpointError, match="not a VQ of this config"):
        load_llamagen_vq(path, VQConfig(**(TINY | {"z_channels": 64}), image_size=8))
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk" * 50)
    with pytest.raises(CheckpointError, match="unreadable|refused"):
        load_llamagen_vq(tmp_path / "junk.pt", cfg)


def test_codes_are_llamagens_nearest_l2_normalised_entries(tmp_path):
    cfg = VQConfig(**TINY, image_size=16, in_channels=1)
    vq = load_llamagen_vq(save_llamagen_file(tmp_path / "vq.pt", cfg), cfg)
    x = torch.rand(3, 1, 16, 16)
    with torch.inference_mode():  # LlamaGen's quantizer, written out: [-1, 1] RGB in, argmin of distances
        z = F.normalize(vq.quant_conv(vq.encoder(x.expand(-1, 3, -1, -1) * 2 - 1)), dim=1)
        emb = F.normalize(vq.quantize.embedding.weight, dim=-1)
        flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
        theirs = torch.argmin((flat**2).sum(1, keepdim=True) + (emb**2).sum(1) - 2 * flat @ emb.T, dim=1)
        ours = torch.cdist(vq.latents(x).permute(0, 2, 3, 1).reshape(-1, 4), vq.quantize.codebook()).argmin(1)
        images = decode_codes_to_images(ours.reshape(3, 4, 4), vq.quantize.codebook(), vq)
    assert torch.equal(ours, theirs)
    assert images.shape == (3, 1, 16, 16) and 0 <= images.min() and images.max() <= 1


def command(module, *args, cwd, cluster=None):
    return subprocess.run([sys.executable, "-m", "arplatform", module, *map(str, args)], capture_output=True,
                          text=True, env=job_env(cluster), cwd=cwd, timeout=300)


def tokenize(root, *extra, cwd, config="tokenizer/digits", cluster=None):
    return command("tokenize", "--config-name", config, f"output_root={root}", "kind=vq", *TINY_FLAGS,
                   "tracking.enabled=false", *extra, cwd=cwd, cluster=cluster)


@pytest.mark.slow
def test_docs_reproduce_at_small_size_vq_codes_on_both_engines_gpt_b_recipe_and_npz(tmp_path, ray_cluster):
    """docs/reproduce.md's commands, with its configs (tokenizer/imagenet_vq16, transformer/imagenet_b),
    on 160 photograph crops at 16² and a random-weights VQ of VQ-16's layout, made small."""
    ckpt = save_llamagen_file(tmp_path / "vq_ds16_c2i.pt", VQConfig(**TINY, image_size=16))
    sha = hashlib.sha256(open(ckpt, "rb").read()).hexdigest()
    photos = photo_crops(tmp_path / "imagenet" / "train", n=160, size=16)
    small = [f"data.data_dir={photos}", "data.image_size=16", "data.val_fraction=0.1", "shards=2",
             f"vq.checkpoint={ckpt}", f"vq.sha256={sha}"]
    ray = tokenize(tmp_path / "exp", *small, "actors=1", config="tokenizer/imagenet_vq16", cwd=tmp_path,
                   cluster=ray_cluster)  # engine=ray, the config's
    assert ray.returncode == 0, ray.stderr[-2000:]
    local = tokenize(tmp_path / "local", *small, "engine=local", config="tokenizer/imagenet_vq16", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    out = tmp_path / "exp" / "codebook" / "imagenet_vq16"
    for name in ("codes.npy", "val_codes.npy"):  # the same codes, whichever engine encoded them
        assert np.array_equal(np.load(out / name), np.load(tmp_path / "local" / "codebook" / "imagenet_vq16" / name))
    codebook = load_codebook_file(out / "codebook.pt")
    assert codebook["config"]["mode"] == "vq" and codebook["config"]["num_codes"] == 64
    saved = load_checkpoint(tmp_path / "exp" / "vae_imagenet_vq16" / "checkpoints" / "best.pt", kind="vq")
    assert saved["train_config"]["source"]["sha256"] == sha
    vq = load_vae(tmp_path / "exp" / "vae_imagenet_vq16" / "checkpoints" / "best.pt")
    assert isinstance(vq, VQ) and torch.allclose(codebook["z_medoid"], vq.quantize.codebook())
    report = json.loads((out / "tokenizer_eval.json").read_text())
    every = np.concatenate([np.load(out / "codes.npy"), np.load(out / "val_codes.npy")])
    assert report["codebook_usage"] == pytest.approx(len(np.unique(every)) / 64)  # of the VQ's K, not codebook.*
    assert report["psnr_real_vs_quantised"] > 0

    train = command("train", "--config-name", "transformer/imagenet_b", f"output_root={tmp_path / 'exp'}",
                    f"data.codebook_dir={out}", "model.preset=tiny", "trainer.use_gpu=false", "trainer.num_workers=1",
                    "trainer.cpus_per_worker=1", "optim.epochs=1", "optim.batch_size=16", "optim.precision=fp32",
                    "sample.num_samples=0", "tracking.enabled=false", cwd=tmp_path, cluster=ray_cluster)
    assert train.returncode == 0, train.stderr[-2000:]
    best = tmp_path / "exp" / "transformer" / "imagenet_b" / "checkpoints" / "best.pt"
    gen = command("generate", "--transformer_ckpt", best, "--num_samples", 6, "--out", tmp_path / "g",
                  "format=npz", "sample.precision=fp32", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-2000:]
    with np.load(tmp_path / "g" / "samples.npz", allow_pickle=False) as samples:
        codes, adm = torch.from_numpy(samples["codes"]), samples["arr_0"]
    expected = decode_codes_to_images(codes.long(), codebook, vq)  # through the VQ's decoder
    assert adm.shape == (6, 16, 16, 3) and adm.dtype == np.uint8
    assert np.abs(adm.astype(int) - np.round(expected.permute(0, 2, 3, 1).numpy() * 255)).max() <= 1


def test_bad_vq_settings_are_one_line_before_anything_runs(tmp_path, monkeypatch):
    from arplatform.cli.tokenize import main

    monkeypatch.chdir(tmp_path)
    base = ["--config-name", "tokenizer/digits", f"output_root={tmp_path / 'r'}", "kind=vq", *TINY_FLAGS,
            "tracking.enabled=false"]
    code, err = run_main(main, [*base, "vq.checkpoint=nowhere.pt"])
    assert code == 2 and err.strip() == "error: nowhere.pt: VQ checkpoint not found (vq.checkpoint)", err
    assert not (tmp_path / "r").exists()
    for flags, key in ((["vq.sha256=xyz", "vq.checkpoint=a.pt"], "vq.sha256"), (["kind=vq"], "vq.checkpoint"),
                       (["vq.checkpoint=a.pt", "vq.channels=48"], "vq:"),
                       (["vq.checkpoint=a.pt", "vq.encoder_ch_mult=[]"], "vq.encoder_ch_mult"),
                       (["vq.checkpoint=a.pt", "vq.codebook_size=1"], "vq.codebook_size"),
                       (["vq.checkpoint=a.pt", "data.image_size=18"], "data.image_size")):
        code, err = run_main(main, [*base, *flags])
        assert code == 2 and len(err.strip().splitlines()) == 1 and key in err, err
