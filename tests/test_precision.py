"""`precision: auto` by measurement: the decision, its cache, and explicit settings obeyed."""


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
    """A probe that takes the given seconds on a clock of its own (`probe.now`, the timer to pass):
    what a probe measures never depends on the machine's load."""
    clock = LoadedClock(fp32_seconds, bf16_seconds, [])

    def probe(precision):
        calls.append(precision)
        clock.probe(precision)

    probe.now = clock.now
    return probe


def test_auto_picks_bf16_only_where_it_is_measured_faster(bf16_cpu):
    calls = []
    probe = fake_probe(0.002, 0.02, calls)
    slow = P.choose_precision("auto", "cpu", probe, key="slow-bf16", timer=probe.now)
    assert slow.precision == "fp32" and "bf16 0.1" in slow.reason and "measured" in slow.reason
    probe = fake_probe(0.02, 0.002, calls)
    fast = P.choose_precision("auto", "cpu", probe, key="fast-bf16", timer=probe.now)
    assert fast.precision == "bf16" and "measured" in fast.reason
    assert {"fp32", "bf16"} <= set(calls)


def test_the_verdict_is_cached_per_key(bf16_cpu):
    calls = []
    fast, slow = fake_probe(0.02, 0.002, calls), fake_probe(0.002, 0.02, calls)
    first = P.choose_precision("auto", "cpu", fast, key="k", timer=fast.now)
    n = len(calls)
    again = P.choose_precision("auto", "cpu", slow, key="k", timer=slow.now)  # would now say fp32
    assert again.precision == first.precision == "bf16" and "cached" in again.reason and len(calls) == n
    other = P.choose_precision("auto", "cpu", slow, key="another model", timer=slow.now)
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
    from arplatform import GPT, CodeSequenceDataset, GPTConfig, OptimConfig, TokenLayout
    from arplatform.core.loop import GPTObjective, IndexBatches, fit

    monkeypatch.setattr(P, "measure_speedup", lambda probe, **kw: [(probe("fp32"), probe("bf16"), 0.5)[-1]] * 5)
    codes, labels = tiny_codes
    layout = TokenLayout(16, 3)
    ds = CodeSequenceDataset(codes, labels, layout=layout)
    batches = IndexBatches(ds.tensors, 16, seed=0)
    states = []
    for _ in range(2):  # the first run probes (and caches fp32), the second reads the cache
        torch.manual_seed(0)
        model = GPT(GPTConfig(layout.vocab_size, 18, 32, 1, 2, dropout=0.1))
        fit(model, GPTObjective(layout, 0.2), batches, 3, None, OptimConfig(batch_size=16, epochs=1, warmup_steps=1))
        states.append(model.state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.equal(a, b)


class LoadedClock:
    """A clock the probe itself advances: each call takes its precision's time × the load of the
    moment (1 = a quiet machine), so a busy machine is a list of loads, the same on any CPU."""

    def __init__(self, fp32: float, bf16: float, loads):
        self.t, self.took, self.loads = 0.0, {"fp32": fp32, "bf16": bf16}, iter(loads)

    def now(self) -> float:
        return self.t

    def probe(self, precision: str) -> None:
        self.t += self.took[precision] * next(self.loads, 1.0)


def test_a_burst_of_load_does_not_decide_and_is_not_cached(bf16_cpu):
    """bf16 2.35× faster; other work slows the first timed bf16 call 10×: the median round still
    says bf16, and a verdict whose rounds disagreed is used but not cached."""
    clock = LoadedClock(2.35, 1.0, [1, 1, 1, 10])  # warm-up fp32, bf16; round 0 fp32, then the burst
    choice = P.choose_precision("auto", "cpu", clock.probe, key="burst", timer=clock.now)
    assert choice.precision == "bf16" and "2.35×" in choice.reason and "not cached" in choice.reason
    assert P._read_cache() == {}
    steady = LoadedClock(2.35, 1.0, [])
    again = P.choose_precision("auto", "cpu", steady.probe, key="burst", timer=steady.now)
    assert again.precision == "bf16" and again.reason.endswith("(measured)")
    assert P.choose_precision("auto", "cpu", steady.probe, key="burst", timer=steady.now).reason.endswith("(cached)")


def test_rounds_that_keep_disagreeing_are_probed_twice_and_never_cached(bf16_cpu):
    loads = [1, 1] + [1, 1, 1, 3] * 20  # every other round bf16 is slowed 3×: 2.0× then 0.67×
    clock, calls = LoadedClock(2.0, 1.0, loads), []

    def probe(p):
        calls.append(p)
        clock.probe(p)

    choice = P.choose_precision("auto", "cpu", probe, key="noisy", timer=clock.now)
    assert len(calls) == 2 + 2 * 2 * P.ROUNDS  # warm-up, then the rounds twice
    assert "not cached" in choice.reason and P._read_cache() == {}


def test_a_cached_verdict_expires_and_can_be_cleared(bf16_cpu, monkeypatch):
    import json
    import subprocess
    import sys

    clock = LoadedClock(1.0, 2.0, [])
    assert P.choose_precision("auto", "cpu", clock.probe, key="k", timer=clock.now).precision == "fp32"
    path = bf16_cpu / "precision.json"
    cache = json.loads(path.read_text())
    (entry,) = cache.values()
    entry["measured_at"] -= (P.CACHE_DAYS + 1) * 86400
    path.write_text(json.dumps(cache))
    faster = LoadedClock(2.0, 1.0, [])
    assert P.choose_precision("auto", "cpu", faster.probe, key="k", timer=faster.now).reason.endswith("(measured)")
    monkeypatch.setenv("ARPLATFORM_PRECISION_REPROBE", "1")
    assert P.choose_precision("auto", "cpu", clock.probe, key="k", timer=clock.now).precision == "fp32"
    monkeypatch.delenv("ARPLATFORM_PRECISION_REPROBE")
    out = subprocess.run([sys.executable, "-m", "arplatform.core.precision", "clear"], capture_output=True, text=True,
                         env={**__import__("os").environ, "ARPLATFORM_CACHE_DIR": str(bf16_cpu)})
    assert out.returncode == 0 and "cleared" in out.stdout and not path.exists()


def test_runs_that_probe_at_once_all_keep_their_verdicts(tmp_path):
    """The cache's read-modify-write is locked: 4 processes writing 10 verdicts each into one
    cache file at once leave all 40 (unlocked, each rewrite dropped the others' new keys)."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom arplatform.core import precision as P\n"
            "for i in range(10):\n    P._write_cache(f'{sys.argv[1]}-{i}', 1.0 + i)\n")
    env = {**os.environ, "ARPLATFORM_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"p{n}"], env=env) for n in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    import json

    cached = json.loads((tmp_path / "precision.json").read_text())
    assert sorted(cached) == sorted(f"p{n}-{i}" for n in range(4) for i in range(10))
