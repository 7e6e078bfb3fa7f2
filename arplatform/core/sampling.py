"""Sampling code sequences from a GPT: `sample_next_token`, `prefill`,
`decode_one_token` and `generate_autoregressive` as plain functions; the KV
cache lives in the model (`GPT.setup_cache`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import GPT
from .precision import autocast
from .tokens import TokenLayout


@dataclass(frozen=True)
class SamplingDefaults:
    """How tokens are drawn unless told otherwise: here, by `generate_autoregressive`, and in every
    config's `sample:` section (`config.SampleConfig` reads these)."""

    temperature: float = 1.0
    top_k: int | None = 64
    top_p: float | None = None
    cfg_scale: float = 2.0
    # constant: cfg_scale at every code; linear: guidance rises from 1 (none) at the first code to
    # cfg_scale at the last, so the first codes (the layout of the image) are drawn as diverse as
    # the data's (MUSE's schedule; docs/generate.md has the measurement)
    cfg_schedule: str = "constant"


CFG_SCHEDULES = ("constant", "linear")


def guidance_at(step: int, num_positions: int, cfg_scale: float, cfg_schedule: str) -> float:
    """The guidance scale of code `step` (0-based) of `num_positions`."""
    if cfg_schedule == "constant" or num_positions == 1:
        return cfg_scale
    return 1.0 + (cfg_scale - 1.0) * step / (num_positions - 1)


def _as_signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = (_as_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def sample_keys(seed: int, indices) -> torch.Tensor:
    """One random stream per sample: the key of sample i depends on (seed, i) only, so a
    sample is the same whatever batch, process, actor or engine draws it."""
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    return _mix64(_mix64(torch.tensor(seed, dtype=torch.int64)) + idx * _GOLDEN)


def row_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """(B, 1) uniforms in [0, 1) for draw number `step` of each row's stream (counter-based)."""
    z = _mix64(keys + torch.full_like(keys, step + 1) * _MIX2)
    return (_shr(z, 11).double() * 2.0**-53).unsqueeze(1)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = SamplingDefaults.temperature,
    top_k: int | None = SamplingDefaults.top_k,
    top_p: float | None = SamplingDefaults.top_p,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row of `logits` (B, V) → (B,): temperature 0 is greedy; top-k, then top-p
    (the smallest most-likely set reaching p). `uniforms` (B, 1): the draws, else `generator`'s."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return draw(logits.softmax(dim=-1), generator, uniforms)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None,
         uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One index per row of `probs` (B, V) by inverting the CDF with one uniform per row (~15×
    faster than torch.multinomial on CPU, which draws for every entry)."""
    cdf = probs.cumsum(dim=-1)
    if uniforms is not None:
        u = uniforms.to(device=probs.device, dtype=cdf.dtype)
    else:
        u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype)
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return index.clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def check_room(model: GPT, first: int, count: int) -> None:
    if first + count > model.config.seq_len:
        raise ValueError(f"{first + count} tokens exceed the model's context seq_len={model.config.seq_len}")


def prefill(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Fill the cache with `tokens` (B, T) from position 0; logits of the last one."""
    check_room(model, 0, tokens.shape[1])
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    return model(tokens, positions, visible=tokens.shape[1])[:, -1]


def decode_one_token(model: GPT, token: torch.Tensor, position: torch.Tensor, visible: int | None = None):
    """Feed one token (B, 1) at `position` ((1,) long tensor) of the cached sequences; its logits.
    `visible` as in `GPT.forward`: None (the whole cache) keeps every shape fixed for a compiled step."""
    return model(token, position, visible)[:, -1]


class Decoder:
    """A GPT's cached decoding, gpt-fast style: `prefill` fills the KV cache with a prompt,
    `decode_one_token` feeds one token at a position. It owns the cache (one batch shape) and the
    step: `eager`, or `compiled` (fixed shapes, mode="reduce-overhead": a CUDA graph per batch
    shape; eager after one warning if it fails), which keeps its cache until `close(force=True)`."""

    STEPS = ("eager", "compiled")

    def __init__(self, model: GPT, step: str = "eager"):
        if step not in self.STEPS:
            raise ValueError(f"step must be one of {self.STEPS}, got {step!r}")
        self.model, self.step = model, step
        self.compiled = None
        if step == "compiled":
            self.compiled = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)

    def setup(self, batch_size: int, precision: str) -> None:
        self.model.setup_cache(batch_size, dtype=torch.bfloat16 if precision == "bf16" else None)

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        return prefill(self.model, tokens)

    def decode_one_token(self, token: torch.Tensor, position: int) -> torch.Tensor:
        check_room(self.model, position, 1)
        at = torch.tensor([position], device=token.device)
        if self.compiled is None:
            return decode_one_token(self.model, token, at, visible=position + 1)
        try:  # a graph's outputs are overwritten by its next replay: clone
            return self.compiled(self.model, token, at).clone()
        except Exception as err:  # compile is a speed-up, never a requirement
            import warnings

            warnings.warn(f"compiled decode step failed, decoding eagerly: {type(err).__name__}: {err}",
                          stacklevel=2)
            self.compiled, self.step = None, "eager"
            return decode_one_token(self.model, token, at, visible=position + 1)

    def close(self, force: bool = False) -> None:
        if force or self.step != "compiled":
            self.model.clear_cache()


def check_generation_args(model: GPT, layout: TokenLayout, num_positions, cfg_scale, cfg_schedule) -> None:
    if isinstance(num_positions, bool) or not isinstance(num_positions, int) or num_positions < 1:
        raise ValueError(f"num_positions must be a positive int, got {num_positions!r}")
    if not isinstance(cfg_scale, (int, float)) or not math.isfinite(cfg_scale):
        raise ValueError(f"cfg_scale must be a finite number, got {cfg_scale!r}")
    if cfg_schedule not in CFG_SCHEDULES:
        raise ValueError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {cfg_schedule!r}")
    if model.config.vocab_size != layout.vocab_size:
        raise ValueError(f"the model's vocabulary ({model.config.vocab_size}) does not match the layout's "
                         f"({layout.vocab_size}: {layout})")


def _prefix(layout: TokenLayout, class_labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    if not layout.conditional:
        return torch.full((batch, 1), layout.bos_id, dtype=torch.long, device=device)
    if class_labels is None:
        cls = torch.full((batch,), layout.null_class_id, dtype=torch.long, device=device)
    else:
        if class_labels.min() < 0 or class_labels.max() >= layout.num_classes:
            raise ValueError(f"class labels must lie in 0..{layout.num_classes - 1}")
        cls = class_labels.to(device=device, dtype=torch.long) + layout.first_class_id
    bos = torch.full((batch,), layout.bos_id, dtype=torch.long, device=device)
    return torch.stack([cls, bos], dim=1)


@torch.inference_mode()
def generate_autoregressive(
    model: GPT,
    layout: TokenLayout,
    num_positions: int,
    num_samples: int | None = None,
    class_labels: torch.Tensor | None = None,
    temperature: float = SamplingDefaults.temperature,
    top_k: int | None = SamplingDefaults.top_k,
    top_p: float | None = SamplingDefaults.top_p,
    cfg_scale: float = SamplingDefaults.cfg_scale,
    cfg_schedule: str = SamplingDefaults.cfg_schedule,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    window_shift: int = 1,
    precision: str = "fp32",
    sample_keys: torch.Tensor | None = None,
    compile_decode: bool | None = None,
    decoder: Decoder | None = None,
) -> torch.Tensor:
    """Sample full sequences ``[class][BOS] c1 … cL [EOS]`` → (B, prefix + L + 1).

    Image positions draw only codes (specials, UNK, classes masked), so every sequence decodes.
    `class_labels` (B,) picks the classes (None: the null class); cfg_scale ≠ 1 mixes
    ``u + s·(c − u)``, s constant or rising from 1 over the codes (`guidance_at`).
    The model sees at most its last `seq_len` tokens (the seed's rule): past that, the oldest
    `window_shift` are dropped and the cache refilled; use_cache=False computes the same logits.
    `sample_keys` (B,) give every row its own random stream (else `generator`); `decoder` (kept
    by the caller) owns the cache and step, else one is made (compiled when `compile_decode`).
    """
    device = model.tok_emb.weight.device
    check_generation_args(model, layout, num_positions, cfg_scale, cfg_schedule)
    class_labels, num_samples = _checked_request(class_labels, num_samples, sample_keys, device)
    seq_len = model.config.seq_len
    if not 1 <= window_shift <= seq_len - 1:
        raise ValueError(f"window_shift must be in 1..{seq_len - 1}, got {window_shift}")
    guided = layout.conditional and cfg_scale != 1.0 and class_labels is not None
    seq = _prefix(layout, class_labels, num_samples, device)
    if guided:  # rows B..2B-1 carry the null class
        seq = torch.cat([seq, _prefix(layout, None, num_samples, device)])
    was_training = model.training
    model.eval()
    own_decoder = use_cache and decoder is None
    if own_decoder:
        compiled = device.type == "cuda" if compile_decode is None else compile_decode
        decoder = Decoder(model, "compiled" if compiled else "eager")
    if use_cache:
        decoder.setup(seq.shape[0], precision)
    invalid = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    invalid[layout.num_codes :] = True
    prefix = seq.shape[1]
    seq = torch.cat([seq, seq.new_empty(seq.shape[0], num_positions)], dim=1)  # filled in place, step by step
    ctx_start, cached = 0, 0  # context = seq[:, ctx_start:length]; `cached` of its tokens are in the cache
    try:
        for length in range(prefix, prefix + num_positions):
            if length - ctx_start > seq_len:
                ctx_start, cached = length - seq_len + window_shift - 1, 0
            context = seq[:, ctx_start:length]
            with autocast(precision, device):
                if not use_cache:
                    logits = model(context)[:, -1]
                elif cached == 0:
                    logits = decoder.prefill(context)
                else:
                    logits = decoder.decode_one_token(context[:, -1:], cached)
            cached = context.shape[1]
            scale = guidance_at(length - prefix, num_positions, cfg_scale, cfg_schedule) if guided else None
            logits = _guided(logits.float(), scale).masked_fill(invalid, float("-inf"))
            uniforms = None if sample_keys is None else row_uniforms(sample_keys, length - prefix)
            token = sample_next_token(logits, temperature, top_k, top_p, generator, uniforms)
            seq[:, length] = token.repeat(2) if guided else token
    finally:
        if own_decoder:
            decoder.close()  # (a compiled decoder keeps its cache: a captured graph reads it)
        model.train(was_training)
    eos = torch.full((num_samples, 1), layout.eos_id, dtype=torch.long, device=device)
    return torch.cat([seq[:num_samples], eos], dim=1)


def _checked_request(class_labels, num_samples, sample_keys, device) -> tuple[torch.Tensor | None, int]:
    """The class labels as a 1-D integer tensor on `device` (their count is the number of
    samples) or None; the number of samples; the per-row keys' type and shape."""
    if class_labels is not None:
        class_labels = torch.as_tensor(np.asarray(class_labels) if not isinstance(class_labels, torch.Tensor)
                                       else class_labels, device=device)
        if class_labels.dtype.is_floating_point or class_labels.dtype.is_complex or class_labels.dtype == torch.bool \
                or class_labels.ndim != 1 or class_labels.numel() == 0:
            raise ValueError(f"class_labels must be a non-empty 1-D integer tensor, got {class_labels.dtype} "
                             f"{tuple(class_labels.shape)}")
        num_samples = class_labels.shape[0]
    if num_samples is None:
        raise ValueError("give num_samples or class_labels")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if sample_keys is not None and (sample_keys.dtype != torch.int64 or tuple(sample_keys.shape) != (num_samples,)):
        raise ValueError(f"sample_keys must be int64 of shape ({num_samples},), got {sample_keys.dtype} "
                         f"{tuple(sample_keys.shape)}")
    return class_labels, num_samples


def _guided(logits: torch.Tensor, cfg_scale: float | None) -> torch.Tensor:
    """Classifier-free guidance over a doubled batch (conditional rows, then null-class rows):
    ``u + cfg_scale·(c − u)``; unguided (None) logits pass unchanged."""
    if cfg_scale is None:
        return logits
    cond, uncond = logits.chunk(2)
    return uncond + cfg_scale * (cond - uncond)


def codes_from_sequences(sequences: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(B, prefix + L + 1) sequences from `generate_autoregressive` → (B, L) codes."""
    return sequences[:, layout.prefix_len : -1]


def sampling_precision(model: GPT, layout: TokenLayout, requested: str, device="cpu"):
    """`precision.choose_precision` for sampling `model`: with `auto`, a few of its own decode
    steps timed in both precisions (cached per machine and model); explicit values obeyed."""
    from .precision import choose_precision

    key = f"sample:{sorted(model.config.to_dict().items())}"
    return choose_precision(requested, device, sampling_probe(model, layout), key)


def sampling_probe(model: GPT, layout: TokenLayout, batch_size: int = 8, positions: int = 8):
    """A few decode steps of `model`, for `precision.choose_precision`."""
    positions = max(1, min(positions, model.config.seq_len - layout.prefix_len))

    def probe(precision: str) -> None:
        generate_autoregressive(model, layout, positions, num_samples=batch_size, precision=precision,
                                generator=torch.Generator().manual_seed(0))

    return probe


def sampling_memory_bytes(config, batch_size: int, guided: bool, image_pixels: int = 0) -> int:
    """About the fp32 memory of drawing `batch_size` samples: the KV cache (twice the rows when
    guided), logits and their sorted copies, decoded images with ~64 channels of activations."""
    rows = batch_size * (2 if guided else 1)
    kv = 2 * config.num_layers * rows * config.seq_len * config.embed_dim * 4
    logits = 3 * rows * config.vocab_size * 4
    decode = batch_size * image_pixels * 64 * 4
    return kv + logits + decode

