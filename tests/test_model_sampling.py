import pytest
import torch

from arplatform import GPT, GPTConfig, TokenLayout, generate_autoregressive, sample_next_token
from arplatform.core.sampling import Decoder, codes_from_sequences, decode_one_token, prefill, sample_keys

LAYOUT = TokenLayout(num_codes=16, num_classes=3)


def tiny_gpt(seq_len=24, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=LAYOUT.vocab_size, seq_len=seq_len, embed_dim=32, num_layers=2, num_heads=4, **kw)
    return GPT(cfg).eval()


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="seq_len"):
        GPTConfig(vocab_size=10, seq_len=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(vocab_size=10, dropout=1.5)


def test_weight_tying():
    m = tiny_gpt()
    assert m.lm_head.weight.data_ptr() == m.tok_emb.weight.data_ptr()


def test_causality():
    m = tiny_gpt()
    x = torch.randint(0, 16, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 16, (2, 8))
    with torch.no_grad():
        a, b = m(x), m(y)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_cached_logits_equal_full_forward():
    m = tiny_gpt()
    x = torch.randint(0, 16, (3, 20))
    with torch.no_grad():
        full = m(x)
        m.setup_cache(3)
        steps = [prefill(m, x[:, :5])]
        steps += [decode_one_token(m, x[:, t : t + 1], torch.tensor([t]), visible=t + 1) for t in range(5, 20)]
        # a multi-token chunk after a cached prefix: causal within the chunk, over the prefix
        m.setup_cache(3)
        m(x[:, :7], torch.arange(7), visible=7)
        chunk = m(x[:, 7:15], torch.arange(7, 15), visible=15)
        m.clear_cache()
    cached = torch.stack(steps, dim=1)
    assert (cached - full[:, 4:]).abs().max() <= 1e-4
    assert (chunk - full[:, 7:15]).abs().max() <= 1e-4


def test_decode_step_over_the_whole_cache_equals_full_forward():
    """The decode step over the whole cache under a mask (visible=None: the fixed shapes a CUDA
    graph captures) gives the plain forward's logits, also where the cache holds stale rows
    beyond the position."""
    m = tiny_gpt()
    x = torch.randint(0, 16, (3, 20))
    with torch.no_grad():
        full = m(x)
        m.setup_cache(3)
        m(torch.randint(0, 16, (3, 20)), torch.arange(20))  # stale entries everywhere
        prefill(m, x[:, :5])
        steps = [decode_one_token(m, x[:, t : t + 1], torch.tensor([t])) for t in range(5, 20)]
    assert (torch.stack(steps, dim=1) - full[:, 5:]).abs().max() <= 1e-4


def test_the_compiled_decode_step_is_one_graph_for_every_position():
    """What a GPU's CUDA graph needs, checked on CPU: torch.compile captures the step over the
    whole cache in one graph without breaks (fullgraph) and never recompiles as the position
    moves; the captured step gives the plain forward's logits."""
    from torch._dynamo.testing import CompileCounter

    m = tiny_gpt()
    x = torch.randint(0, 16, (3, 20))
    captures = CompileCounter()
    step = torch.compile(decode_one_token, fullgraph=True, backend=captures)
    with torch.no_grad():
        full = m(x)
        m.setup_cache(3)
        prefill(m, x[:, :2])
        steps = [step(m, x[:, t : t + 1], torch.tensor([t])) for t in range(2, 20)]
    assert captures.frame_count == 1
    assert (torch.stack(steps, dim=1) - full[:, 2:]).abs().max() <= 1e-4


def test_generate_with_the_whole_cache_step_matches_eager():
    """compile_decode on a CPU-only machine is only tested uncompiled here (the step a compiled
    decoder captures, run as it is; torch.compile is exercised by the GPU tests): same sequences
    as the default path."""
    m = tiny_gpt(seq_len=12)
    layout = TokenLayout(num_codes=10, num_classes=2)
    m2 = GPT(GPTConfig(**{**m.config.to_dict(), "vocab_size": layout.vocab_size})).eval()
    keys = sample_keys(0, range(4))
    a = generate_autoregressive(m2, layout, 20, class_labels=torch.tensor([0, 1, 0, 1]), sample_keys=keys,
                                compile_decode=False)
    decoder = Decoder(m2, "eager")
    decoder.compiled = decode_one_token  # the compiled decoder's step (the whole cache), uncompiled
    b = generate_autoregressive(m2, layout, 20, class_labels=torch.tensor([0, 1, 0, 1]), sample_keys=keys,
                                decoder=decoder)
    assert torch.equal(a, b)
    # the caller's decoder keeps what it owns; the module carries nothing of it
    assert m2.blocks[0].attn.cache is not None and not hasattr(m2, "compiled_decode")
    decoder.close()
    assert m2.blocks[0].attn.cache is None


def test_context_limit_is_enforced():
    m = tiny_gpt(seq_len=8)
    with pytest.raises(ValueError, match="exceed"):
        m(torch.zeros(1, 9, dtype=torch.long))
    m.setup_cache(1)
    with pytest.raises(ValueError, match="exceed"):
        Decoder(m).decode_one_token(torch.zeros(1, 1, dtype=torch.long), 8)


@pytest.mark.parametrize("window_shift", [1, 3])
def test_greedy_identical_with_and_without_cache_past_the_window(window_shift):
    m = tiny_gpt(seq_len=10)  # 2 prefix tokens + 30 codes: well past the 10-token window
    labels = torch.tensor([0, 2])
    a = generate_autoregressive(m, LAYOUT, 30, class_labels=labels, temperature=0, window_shift=window_shift)
    b = generate_autoregressive(
        m, LAYOUT, 30, class_labels=labels, temperature=0, use_cache=False, window_shift=window_shift
    )
    assert a.shape == (2, 33) and torch.equal(a, b)


def test_window_keeps_only_the_last_seq_len_tokens():
    """With the seed's slide, each step equals a plain forward over the last seq_len tokens."""
    m = tiny_gpt(seq_len=6)
    seq = generate_autoregressive(m, LAYOUT, 12, class_labels=torch.tensor([1]), temperature=0)
    masked = torch.full((LAYOUT.vocab_size,), False)
    masked[16:] = True
    with torch.no_grad():
        for t in range(2, 14):
            ctx = seq[:, max(0, t - 6) : t]
            expected = m(ctx)[:, -1].masked_fill(masked, float("-inf")).argmax(-1)
            assert expected.item() == seq[0, t].item()


def test_generated_sequences_are_valid():
    m = tiny_gpt()
    g = torch.Generator().manual_seed(0)
    seq = generate_autoregressive(
        m, LAYOUT, 16, class_labels=torch.tensor([0, 1, 2, 1]), temperature=1.5, top_p=0.99,
        cfg_scale=3.0, generator=g,
    )
    codes = codes_from_sequences(seq, LAYOUT)
    assert codes.shape == (4, 16)
    assert ((codes >= 0) & (codes < 16)).all()
    assert (seq[:, 0] == torch.tensor([0, 1, 2, 1]) + LAYOUT.first_class_id).all()
    assert (seq[:, 1] == LAYOUT.bos_id).all() and (seq[:, -1] == LAYOUT.eos_id).all()


def test_a_linear_guidance_schedule_rises_from_none_to_the_scale():
    """cfg_schedule=linear: guidance 1 (the conditional logits alone) at the first code, cfg_scale
    at the last; the first code is then drawn as with no guidance at all, the rest differ."""
    from arplatform.core.sampling import guidance_at

    assert [guidance_at(t, 5, 3.0, "linear") for t in range(5)] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert {guidance_at(t, 5, 3.0, "constant") for t in range(5)} == {3.0}
    m, labels, keys = tiny_gpt(), torch.tensor([0, 1, 2, 1] * 8), sample_keys(0, range(32))
    draw = lambda **kw: generate_autoregressive(m, LAYOUT, 16, class_labels=labels, sample_keys=keys, **kw)  # noqa: E731
    unguided, linear, constant = draw(cfg_scale=1.0), draw(cfg_scale=4.0, cfg_schedule="linear"), draw(cfg_scale=4.0)
    first = LAYOUT.prefix_len
    assert torch.equal(linear[:, first], unguided[:, first]) and not torch.equal(linear, constant)
    with pytest.raises(ValueError, match="cfg_schedule must be one of constant, linear"):
        draw(cfg_scale=2.0, cfg_schedule="cosine")


def test_generation_is_reproducible_with_a_generator():
    m = tiny_gpt()
    run = lambda: generate_autoregressive(  # noqa: E731
        m, LAYOUT, 16, num_samples=4, generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(run(), run())
    assert m.blocks[0].attn.cache is None  # the cache is freed after generation


def test_top_k_one_is_argmax():
    logits = torch.randn(64, 50)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, temperature=1.0, top_k=1, generator=g), logits.argmax(-1))
    assert torch.equal(sample_next_token(logits, temperature=0), logits.argmax(-1))


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    draws = sample_next_token(logits.expand(4000, 4), top_p=0.8, generator=g)
    assert set(draws.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.8; token 2 is excluded
    share = (draws == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.03  # renormalised over the kept set
    draws = sample_next_token(logits.expand(4000, 4), top_p=0.81, generator=g)
    assert set(draws.tolist()) == {0, 1, 2}
    draws = sample_next_token(logits.expand(2000, 4), top_k=3, top_p=0.9, generator=g)
    assert set(draws.tolist()) == {0, 1, 2}  # top-k then top-p compose


def test_sampling_argument_checks():
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(1, 3), top_p=0)
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(1, 3), top_k=0)
