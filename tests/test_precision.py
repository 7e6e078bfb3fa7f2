"""`precision: auto` by measurement: the decision, its cache, and explicit settings obeyed."""

import time

import pytest
import torch

from arplatform.core import precision as P


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """A CPU that reports bf16 instructions, and a cache of this test's own."""
    monkeypatch.setattr(P, "cpu_description", lambda: ("Test CPU", ("avx512_bf16",)))
    monkeypatch.setenv("ARPLATFORM_CACHE_DIR", str(tmp_path))
    return tmp_path


def fake_probe(fp32_seconds, bf16_seconds, calls):
    def probe(precision):
        calls.append(precision)
        time.sleep(fp32_seconds if precision == "fp32" else bf16_seconds)

    return probe


def test_auto_picks_bf16_only_where_it_is_measured_faster(bf16_cpu):
    calls = []
    slow = P.choose_precision("auto", "cpu", fake_probe(0.002, 0.02, calls), key="slow-bf16")
    assert slow.precision == "fp32" and "bf16 0.1" in slow.reason and "measured" in slow.reason
    fast = P.choose_precision("auto", "cpu", fake_probe(0.02, 0.002, calls), key="fast-bf16")
    assert fast.precision == "bf16" and "measured" in fast.reason
    assert {"fp32", "bf16"} <= set(calls)


def test_the_verdict_is_cached_per_key(bf16_cpu):
    calls = []
    first = P.choose_precision("auto", "cpu", fake_probe(0.02, 0.002, calls), key="k")
    n = len(calls)
    again = P.choose_precision("auto", "cpu", fake_probe(0.002, 0.02, calls), key="k")  # would now say fp32
    assert again.precision == first.precision == "bf16" and "cached" in again.reason and len(calls) == n
    other = P.choose_precision("auto", "cpu", fake_probe(0.002, 0.02, calls), key="another model")
    assert other.precision == "fp32" and len(calls) > n


def test_explicit_settings_are_always_obeyed(bf16_cpu):
    never = fake_probe(1.0, 1.0, calls := [])
    for explicit in ("fp32", "bf16"):
        choice = P.choose_precision(explicit, "cpu", never, key="x")
        assert choice.precision == explicit and choice.reason == "set explicitly"
    assert calls == []
    with pytest.raises(ValueError, match="precision must be one of"):
        P.choose_precision("fp16", "cpu", never)


def test_no_bf16_instructions_means_fp32_without_probing(monkeypatch):
    monkeypatch.setattr(P, "cpu_description", lambda: ("Old CPU", ()))
    choice = P.choose_precision("auto", "cpu", fake_probe(1.0, 0.0, calls := []))
    assert choice.precision == "fp32" and calls == []


def test_fit_obeys_the_decision_and_probing_never_changes_the_trajectory(bf16_cpu, monkeypatch, tiny_codes):
    """A run that probed and one that found the verdict cached train bit-identically."""
    from arplatform import GPT, CodeSequenceDataset, GPTConfig, TokenLayout, TrainConfig
    from arplatform.core.loop import GPTObjective, IndexBatches, fit

    monkeypatch.setattr(P, "measure_speedup", lambda probe, rounds=3: (probe("fp32"), probe("bf16"), 0.5)[-1])
    codes, labels = tiny_codes
    layout = TokenLayout(16, 3)
    ds = CodeSequenceDataset(codes, labels, layout=layout)
    batches = IndexBatches(ds.tensors, 16, seed=0)
    states = []
    for _ in range(2):  # the first run probes (and caches fp32), the second reads the cache
        torch.manual_seed(0)
        model = GPT(GPTConfig(layout.vocab_size, 18, 32, 1, 2, dropout=0.1))
        fit(model, GPTObjective(layout, 0.2), batches, 3, None, TrainConfig(batch_size=16, epochs=1, warmup_steps=1))
        states.append(model.state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.equal(a, b)
