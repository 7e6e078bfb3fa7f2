"""A GPT over code tokens: RoPE, pre-norm blocks, SDPA, weight tying, a KV cache it owns.
Top to bottom: config → rotary positions → cache → attention → block → GPT. Rotary positions
score a window the same wherever it sits, so the generator can slide it."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int = 64  # context: the most tokens the model attends over
    embed_dim: int = 256
    num_layers: int = 4
    num_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.1
    bias: bool = False
    rope_base: float = 10000.0
    tie_embeddings: bool = True  # the output layer is the token embedding (False: its own, as LlamaGen's)

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "embed_dim", "num_layers", "num_heads", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"GPTConfig.embed_dim ({self.embed_dim}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if (self.embed_dim // self.num_heads) % 2:
            raise ValueError("GPTConfig: head size (embed_dim / num_heads) must be even for RoPE")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"GPTConfig.tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


def rope_tables(seq_len: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)
    return angles.cos(), angles.sin()  # (seq_len, head_dim/2) each


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x (B, H, T, d) by the angles of its positions."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool,
           dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q·kᵀ/√d + mask)·v (B, H, T, d): causal, under `mask` (T, keys), or over every key.
    The kernel is chosen by measurement (torch 2.13, EPYC): SDPA's CPU flash kernel is slow in
    bf16, and for one token against a cache the formula written out wins (1.2–1.5×)."""
    if q.device.type == "cpu" and q.shape[2] == 1 and mask is None and not causal:
        return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v
    math_kernel = q.device.type == "cpu" and q.dtype == torch.bfloat16
    with sdpa_kernel(SDPBackend.MATH) if math_kernel else nullcontext():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)


class KVCache(nn.Module):
    """Keys and values of the tokens seen so far, for one attention layer."""

    def __init__(self, batch_size: int, num_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch_size, num_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the keys and values of tokens at `positions` ((T,) long) and return the whole
        cache: no shape depends on the positions' values, so a compiled step is captured once."""
        self.k.index_copy_(2, positions, k.to(self.k.dtype))
        self.v.index_copy_(2, positions, v.to(self.v.dtype))
        return self.k, self.v


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.cache: KVCache | None = None

    def forward(self, x, cos, sin, positions: torch.Tensor | None = None, visible: int = 0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """positions None: causal over x. Else x's keys and values go to `positions` of the cache,
        and x attends over its first `visible` positions where `mask` (T, visible) allows."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        (q, k), v = apply_rope(qkv[:2], cos, sin), qkv[2]  # one rotation for q and k together
        if positions is not None:
            k, v = self.cache.update(positions, k, v)
            k, v = k[:, :, :visible], v[:, :, :visible]
        y = attend(q, k, v, mask, causal=positions is None, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.embed_dim, cfg.embed_dim, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, positions=None, visible=0, mask=None):
        x = x + self.attn(self.norm1(x), cos, sin, positions, visible, mask)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.embed_dim, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.embed_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.num_layers))
        self.cache_batch_size = 0

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- KV cache ----------------------------------------------------------
    def setup_cache(self, batch_size: int, dtype=None, device=None) -> None:
        """A cache for `batch_size` sequences of up to `seq_len` tokens; one of the same shape is
        kept (a CUDA graph reads its buffers by address; positions are written before read)."""
        p = self.tok_emb.weight
        shape = (batch_size, self.config.num_heads, self.config.seq_len, self.config.head_dim)
        dtype, device = dtype or p.dtype, torch.device(device or p.device)
        for block in self.blocks:
            old = block.attn.cache
            if old is None or old.k.shape != shape or old.k.dtype != dtype or old.k.device != device:
                block.attn.cache = KVCache(*shape, dtype, device)
        self.cache_batch_size = batch_size

    def clear_cache(self) -> None:
        for block in self.blocks:
            block.attn.cache = None
        self.cache_batch_size = 0

    # -- forward -----------------------------------------------------------
    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                visible: int | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens idx (B, T). positions None: causal, no cache (training).
        positions (T,): the tokens' keys and values go to these cache positions, each attending up
        to its own among the first `visible` (default the whole cache: fixed shapes for a compiled
        step; an eager decoder passes position + 1 to read no more than it must)."""
        B, T = idx.shape
        if positions is None:
            if T > self.config.seq_len:
                raise ValueError(f"{T} tokens exceed the model's context seq_len={self.config.seq_len}")
            cos, sin, mask = self.rope_cos[:T], self.rope_sin[:T], None
        else:
            if B != self.cache_batch_size:
                raise ValueError(f"batch {B} does not match the cache (set up for {self.cache_batch_size})")
            cos, sin = self.rope_cos.index_select(0, positions), self.rope_sin.index_select(0, positions)
            mask = None  # one token and the positions written so far: it sees every one
            if T > 1 or visible is None:  # a token sees itself and the positions before it
                visible = self.config.seq_len if visible is None else visible
                mask = torch.arange(visible, device=idx.device) <= positions.view(-1, 1)  # (T, visible)
        x = self.drop(self.tok_emb(idx))
        for block in self.blocks:
            x = block(x, cos, sin, positions, visible, mask)
        return self.lm_head(self.norm(x))


def parameter_count(cfg: GPTConfig) -> int:
    """`GPT.num_params` of `cfg` from its shapes, nothing built (even on the meta device, building
    imports torch's compiler: a second of every start-up)."""
    d, hidden = cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim
    weights = 3 * d * d + d * d + 2 * d * hidden  # qkv, attention projection, MLP in and out
    biases = (3 * d + d + hidden + d + 2 * d) if cfg.bias else 0  # those four, and the two norms'
    block = 2 * d + weights + biases  # two LayerNorm weights
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)  # the output layer's own, untied
    return embeddings + cfg.num_layers * block + d + (d if cfg.bias else 0)  # and the final norm


def training_flops_per_token(cfg: GPTConfig) -> int:
    """FLOPs of one training token (PaLM's count for MFU): 6 per weight (an untied input embedding
    is a lookup) and 12·layers·width·context for attention."""
    lookup = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.embed_dim
    return 6 * (parameter_count(cfg) - lookup) + 12 * cfg.num_layers * cfg.embed_dim * cfg.seq_len
