"""GPU paths, run by bench/gpu_check.sh on a machine with a CUDA GPU; skipped elsewhere."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_generate import images, write_models

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_generate_on_cuda_is_deterministic_across_batches(tmp_path):
    ckpt, _, _ = write_models(tmp_path / "m")
    for bs in (4, 16):
        proc = subprocess.run([sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt", ckpt,
                               "--num_samples", "32", "--batch_size", str(bs), "--device", "cuda",
                               "--precision", "fp32", "--out", str(tmp_path / f"b{bs}")],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    assert np.array_equal(images(tmp_path / "b4")[0], images(tmp_path / "b16")[0])


def test_ray_generation_with_one_gpu_per_actor(tmp_path):
    ckpt, _, _ = write_models(tmp_path / "m")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "arplatform", "generate", "--transformer_ckpt", ckpt, "--num_samples",
                           "64", "--engine", "ray", "--actors", "1", "--use_gpu", "true", "--out",
                           str(tmp_path / "ray")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "GPU each" in proc.stdout and images(tmp_path / "ray")[0].shape[0] == 64


def test_compiled_decode_step_matches_the_full_forward_on_cuda():
    """The static-shape decode step compiled with mode="reduce-overhead" (a CUDA graph) gives the
    plain forward's logits, and generation uses it by default on a GPU."""
    from arplatform import GPT, GPTConfig, TokenLayout
    from arplatform.core.sampling import Decoder

    torch.manual_seed(0)
    layout = TokenLayout(num_codes=32, num_classes=4)
    length = layout.sequence_length(20)
    model = GPT(GPTConfig(vocab_size=layout.vocab_size, seq_len=length, embed_dim=64, num_layers=2,
                          num_heads=4)).cuda().eval()
    x = torch.randint(0, 32, (8, length), device="cuda")
    with torch.inference_mode():
        full = model(x)
        decoder = Decoder(model, "compiled")
        decoder.setup(8, "fp32")
        decoder.prefill(x[:, :2])
        steps = torch.stack([decoder.decode_one_token(x[:, t : t + 1], t) for t in range(2, length)], dim=1)
    assert decoder.step == "compiled"  # not fallen back to eager
    assert (steps - full[:, 2:]).abs().max() < 1e-3


def test_training_on_cuda_compiles_learns_and_uses_the_fused_optimizer():
    """The GPU defaults of the core loop: the forward compiled (no fallback warning), bf16 where
    the GPU supports it, fused AdamW; the loss falls on learnable sequences."""
    import warnings

    from arplatform import GPT, GPTConfig, TokenLayout
    from arplatform.core.loop import GPTObjective, IndexBatches, OptimConfig, fit, make_optimizer

    torch.manual_seed(0)
    layout = TokenLayout(num_codes=16, num_classes=4)
    labels = torch.randint(0, 4, (256,))
    codes = (labels[:, None] * 3 + torch.arange(16)[None]) % 16
    seqs = torch.cat([labels[:, None] + layout.first_class_id, torch.full((256, 1), layout.bos_id), codes,
                      torch.full((256, 1), layout.eos_id)], 1)
    model = GPT(GPTConfig(vocab_size=layout.vocab_size, seq_len=seqs.shape[1] - 1, embed_dim=64, num_layers=2,
                          num_heads=4)).cuda()
    assert make_optimizer(model, OptimConfig()).defaults["fused"]
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "torch.compile failed, training eagerly" fails the test
        fit(model, GPTObjective(layout, 0.0), IndexBatches({"input_ids": seqs[:, :-1].cuda(),
                                                            "labels": seqs[:, 1:].cuda()}, 32),
            8, None, OptimConfig(epochs=5, lr=3e-3, warmup_steps=2, log_every=4, class_dropout=0.0),
            device="cuda", callback=lambda m, s: losses.append(m["train/loss"]) if "train/loss" in m else None)
    assert losses[-1] < 0.5 * losses[0], losses


def test_fsdp_with_activation_checkpointing_trains_compiled_on_cuda(tmp_path):
    """trainer.strategy=fsdp's sharding and model.activation_checkpointing on a GPU, compiled and in
    bf16 where supported (one process, NCCL): the loss falls and last.pt is a whole model."""
    import torch.distributed as dist

    from arplatform import GPT, GPTConfig, TokenLayout, load_model
    from arplatform.core.loop import GPTObjective, IndexBatches, OptimConfig, checkpoint_activations, fit
    from arplatform.distributed.cluster import free_port
    from arplatform.distributed.train_worker import shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        layout = TokenLayout(num_codes=16, num_classes=4)
        labels = torch.randint(0, 4, (256,))
        codes = (labels[:, None] * 3 + torch.arange(16)[None]) % 16
        seqs = torch.cat([labels[:, None] + layout.first_class_id, torch.full((256, 1), layout.bos_id), codes,
                          torch.full((256, 1), layout.eos_id)], 1).cuda()
        model = GPT(GPTConfig(vocab_size=layout.vocab_size, seq_len=seqs.shape[1] - 1, embed_dim=64, num_layers=2,
                              num_heads=4, dropout=0.0))
        model = shard_model(checkpoint_activations(model).cuda())
        losses = []
        fit(model, GPTObjective(layout, 0.0), IndexBatches({"input_ids": seqs[:, :-1], "labels": seqs[:, 1:]}, 32),
            8, None, OptimConfig(epochs=5, lr=3e-3, warmup_steps=2, log_every=4, class_dropout=0.0), device="cuda",
            checkpoint_dir=str(tmp_path), callback=lambda m, s: losses.append(m["train/loss"]) if "train/loss" in m
            else None)
    finally:
        dist.destroy_process_group()
    assert losses[-1] < 0.5 * losses[0], losses
    assert load_model(str(tmp_path / "last.pt"))[0].num_params() > 0
