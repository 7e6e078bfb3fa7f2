import gc
import math
import os
import pickle
import warnings

import pytest
import torch

from arplatform import (
    GPT,
    CheckpointError,
    CodeSequenceDataset,
    GPTConfig,
    OptimConfig,
    TokenLayout,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from arplatform.core.loop import GPTObjective, IndexBatches, drop_code_tokens, fit, lr_at


def make_model(layout, seq_len=24, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=layout.vocab_size, seq_len=seq_len, embed_dim=32,
                         num_layers=2, num_heads=4, dropout=dropout))


def test_activation_checkpointing_keeps_the_keys_the_loss_and_the_gradients(tmp_path):
    """Recomputing each block's activations in the backward (`checkpoint_activations`) changes
    memory, not the model: the same state-dict keys (a checkpoint loads either way), and with
    dropout on, the same loss and gradients (the recompute replays the dropout masks)."""
    from arplatform.core.loop import checkpoint_activations

    layout = TokenLayout(num_codes=16, num_classes=3)
    plain, wrapped = make_model(layout, dropout=0.1), checkpoint_activations(make_model(layout, dropout=0.1))
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    tokens = torch.randint(0, 16, (4, 20))
    grads = []
    for model in (plain, wrapped):
        torch.manual_seed(7)
        loss = torch.nn.functional.cross_entropy(model.train()(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        grads.append((loss.item(), {n.replace("_checkpoint_wrapped_module.", ""): p.grad.clone()
                                    for n, p in model.named_parameters()}))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    assert loss_a == loss_b and grad_a.keys() == grad_b.keys()
    assert all(torch.allclose(grad_a[n], grad_b[n], atol=1e-6) for n in grad_a)
    ckpt = save_checkpoint(tmp_path / "ac.pt", wrapped, layout, grid_shape=(4, 4))
    assert load_model(ckpt)[0].state_dict().keys() == plain.state_dict().keys()


def test_checkpoint_round_trip(tmp_path):
    layout = TokenLayout(16, 3)
    model = make_model(layout)
    path = save_checkpoint(tmp_path / "best.pt", model, layout, grid_shape=(4, 4), step=7, metrics={"val/loss": 1.5})
    loaded, got_layout, ckpt = load_model(path)
    assert got_layout == layout and ckpt["step"] == 7 and ckpt["grid_shape"] == [4, 4]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # atomic: no temp left


def test_checkpoint_with_another_vocabulary(tmp_path):
    model = make_model(TokenLayout(16, 3))
    path = save_checkpoint(tmp_path / "m.pt", model, TokenLayout(16, 3))
    with pytest.raises(CheckpointError, match=r"m.pt: token layout .* does not match"):
        load_checkpoint(path, expected_layout=TokenLayout(32, 3))
    ckpt = torch.load(path, weights_only=True)
    ckpt["layout"] = TokenLayout(32, 3).to_dict()
    ckpt["model_config"]["vocab_size"] = TokenLayout(32, 3).vocab_size
    torch.save(ckpt, tmp_path / "forged.pt")
    with pytest.raises(CheckpointError, match="forged.pt: weights do not match"):
        load_model(tmp_path / "forged.pt")


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", make_model(TokenLayout(16)), TokenLayout(16))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="last.pt: unreadable or truncated"):
        load_checkpoint(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_checkpoint_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"format_version": 1, "payload": _RunsCode()}, f)
    torch.save({"x": _RunsCode()}, "evil_zip.pt")
    for name in ("evil.pt", "evil_zip.pt"):
        with pytest.raises(CheckpointError, match=f"{name}: refused to load") as refused:
            load_checkpoint(name)
        # one line with the reason, and never PyTorch's advice to load it with weights_only=False
        assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    assert "GLOBAL posix.system" in str(refused.value)
    assert not os.path.exists("PWNED_BY_CHECKPOINT")


def test_lr_schedule():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55)


def test_train_config_validation():
    with pytest.raises(ValueError, match="precision"):
        OptimConfig(precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        OptimConfig(batch_size=0)


def _setup(tiny_codes, dropout=0.0):
    codes, labels = tiny_codes
    layout = TokenLayout(16, 3)
    ds = CodeSequenceDataset(codes, labels, layout=layout)
    return layout, ds, make_model(layout, dropout=dropout)


def test_overfit_one_batch(tiny_codes):
    layout, ds, model = _setup(tiny_codes)
    # one sequence per class, so the prefix [class][BOS] determines every target
    rows = [int((ds.class_labels == c).nonzero()[0][0]) for c in range(3)]
    batch = {"input_ids": ds.input_ids[rows], "labels": ds.labels[rows]}
    cfg = OptimConfig(batch_size=8, lr=3e-3, epochs=1, warmup_steps=5, class_dropout=0.0,
                      precision="fp32", min_lr_ratio=1.0, weight_decay=0.0)
    seen = []
    fit(model, GPTObjective(layout), lambda e, s: (batch for _ in range(300 - s)), 300, None, cfg,
        callback=lambda m, step: "train/loss" in m and seen.append(m["train/loss"]))
    # an invariant with margin, not one CPU's trajectory: Intel (AVX-512) and AMD differ in the last
    # steps (0.125 vs < 0.05 seen at step 300); memorising 3 sequences must cut the loss tenfold
    assert seen[0] > 2.0 and min(seen[-5:]) < seen[0] / 10


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_is_bit_identical(tiny_codes, tmp_path, ema_decay):
    """N steps straight == N/2 steps, save, load into a fresh process state, N/2 steps (the
    weight average too, when there is one)."""
    cfg = dict(batch_size=16, lr=2e-3, epochs=3, warmup_steps=3, grad_accum_steps=2, precision="fp32", seed=1,
               ema_decay=ema_decay)
    layout, ds, model = _setup(tiny_codes, dropout=0.1)  # dropout + class dropout exercise the RNG
    batches = IndexBatches(ds.tensors, 16, seed=1)
    spe = len(batches) // 2  # 6 micro-batches → 3 steps per epoch
    torch.manual_seed(123)
    objective = GPTObjective(layout, class_dropout=0.3, token_dropout=0.1)
    fit(model, objective, batches, spe, lambda: batches(0), OptimConfig(**cfg),
        checkpoint_dir=str(tmp_path / "straight"))
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    _, _, first = _setup(tiny_codes, dropout=0.1)
    torch.manual_seed(123)
    half = dict(cfg, max_steps=4)  # stops mid-epoch 2
    fit(first, objective, batches, spe, lambda: batches(0), OptimConfig(**half), checkpoint_dir=str(tmp_path / "split"))
    assert load_checkpoint(tmp_path / "split" / "last.pt")["step"] == 4
    torch.manual_seed(999)  # a different process state: everything must come from last.pt
    _, _, second = _setup(tiny_codes, dropout=0.1)
    fit(second, objective, batches, spe, lambda: batches(0), OptimConfig(**cfg),
        checkpoint_dir=str(tmp_path / "split"), resume_from=str(tmp_path / "split" / "last.pt"))
    for k, v in second.state_dict().items():
        assert torch.equal(v, straight[k]), k
    assert (tmp_path / "split" / "best.pt").exists()
    ends = [load_checkpoint(tmp_path / name / "last.pt") for name in ("straight", "split")]
    assert ("ema_state_dict" in ends[0]) == (ema_decay > 0)
    for k, v in ends[0].get("ema_state_dict", {}).items():
        assert torch.equal(v, ends[1]["ema_state_dict"][k]), k
    # resumed after its last epoch (a driver killed before it saw the end): nothing to do, same end
    _, _, third = _setup(tiny_codes, dropout=0.1)
    final = fit(third, objective, batches, spe, lambda: batches(0), OptimConfig(**cfg),
                resume_from=str(tmp_path / "split" / "last.pt"))
    assert final["step"] == 9 and final["epoch"] == 2 and "best_val_loss" in final


def test_the_weight_average_is_what_best_pt_holds(tiny_codes, tmp_path):
    """optim.ema_decay: after each step average ← average + (1 − d)(weights − average), d ramping up
    as (1+n)/(10+n); best.pt holds the average, last.pt the weights and the average."""
    from arplatform.core.loop import WeightAverage

    layer = torch.nn.Linear(2, 1, bias=False)
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    start = average.shadow[0].clone()
    average.update()  # n=1: d = min(0.5, 2/11)
    assert torch.allclose(average.shadow[0], start + (1 - 2 / 11) * (1.0 - start))
    with average.applied():
        assert torch.equal(layer.weight, average.shadow[0])
    assert torch.equal(layer.weight, torch.ones(1, 2))

    layout, ds, model = _setup(tiny_codes)
    batches = IndexBatches(ds.tensors, 16, seed=1)
    cfg = OptimConfig(batch_size=16, epochs=1, warmup_steps=2, precision="fp32", ema_decay=0.9)
    fit(model, GPTObjective(layout), batches, len(batches), None, cfg, checkpoint_dir=str(tmp_path))
    best, last = (load_checkpoint(tmp_path / name) for name in ("best.pt", "last.pt"))
    for key, value in best["model_state_dict"].items():
        assert torch.equal(value, last["ema_state_dict"][key]), key
        assert torch.equal(last["model_state_dict"][key], model.state_dict()[key]), key
    assert any(not torch.equal(v, last["model_state_dict"][k]) for k, v in best["model_state_dict"].items())


def _sharded_fit(rank: int, port: int, codes: str, labels: str, folder: str, max_steps: int, resume: bool) -> None:
    """`fit` on a model sharded by FSDP2 (`shard_model`, what trainer.strategy=fsdp runs) in a
    process group of one (gloo, CPU)."""
    import torch.distributed as dist

    from arplatform.distributed.train_worker import shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=1)
    try:
        torch.set_num_threads(1)
        layout = TokenLayout(16, 3)
        batches = IndexBatches(CodeSequenceDataset(codes, labels, layout=layout).tensors, 8, seed=1)
        model = shard_model(make_model(layout, dropout=0.1))
        torch.manual_seed(123)
        cfg = OptimConfig(batch_size=8, lr=2e-3, epochs=2, warmup_steps=2, precision="fp32", compile="false",
                          seed=1, max_steps=max_steps)

        def reduce(t):
            dist.all_reduce(t)
            return t

        fit(model, GPTObjective(layout, class_dropout=0.3), batches, len(batches), lambda: batches(0), cfg,
            checkpoint_dir=folder, resume_from=os.path.join(folder, "last.pt") if resume else None,
            reduce=reduce, is_main=True)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_sharded_model_checkpoints_whole_and_resumes_bit_identical(tiny_codes, tmp_path):
    """The loop's FSDP2 paths on a CPU (one process, gloo; the two-rank run is a GPU test, see
    docs/design.md): the checkpoint gathered from the shards is a whole model a plain GPT loads,
    the sharded gradient norm is read, and a run stopped after 3 steps and resumed into the shards
    ends bit-identical to a straight one, dropout and class dropout on. Each run in a process of
    its own: the process group stays out of this one."""
    import torch.multiprocessing as mp

    from arplatform.distributed.cluster import free_port

    codes, labels = (str(p) for p in tiny_codes)
    runs = {"straight": [(0, False)], "split": [(3, False), (0, True)]}
    for name, legs in runs.items():
        for max_steps, resume in legs:
            mp.spawn(_sharded_fit, args=(free_port(), codes, labels, str(tmp_path / name), max_steps, resume),
                     nprocs=1)
    straight, split = (load_checkpoint(tmp_path / name / "last.pt") for name in runs)
    assert straight["step"] == split["step"] == 24  # 100 rows, whole batches of 8: 12 steps an epoch
    for key, value in straight["model_state_dict"].items():
        assert torch.equal(value, split["model_state_dict"][key]), key
    model, _, _ = load_model(tmp_path / "straight" / "best.pt")
    assert model.state_dict().keys() == make_model(TokenLayout(16, 3)).state_dict().keys()


def test_fit_freezes_the_heap_only_while_it_trains(tiny_codes):
    layout, ds, model = _setup(tiny_codes)
    cfg = OptimConfig(batch_size=8, epochs=1, log_every=1, precision="fp32")
    frozen = []

    def batches(epoch, skip):
        for _ in range(2):
            frozen.append(gc.get_freeze_count())
            yield {"input_ids": ds.input_ids[:8], "labels": ds.labels[:8]}
        raise RuntimeError("data source failed")

    with pytest.raises(RuntimeError, match="data source failed"):
        fit(model, GPTObjective(layout), batches, 5, None, cfg)
    assert min(frozen) > 0 and gc.get_freeze_count() == 0  # unfrozen after an error too


def test_resume_without_last_pt_is_an_error(tiny_codes, tmp_path):
    layout, ds, model = _setup(tiny_codes)
    batches = IndexBatches(ds.tensors, 16)
    with pytest.raises(CheckpointError, match="last.pt: checkpoint not found"):
        fit(model, GPTObjective(layout), batches, len(batches), None, OptimConfig(),
            checkpoint_dir=str(tmp_path), resume_from=str(tmp_path / "last.pt"))


def test_bf16_loss_curve_matches_fp32(tiny_codes):
    """bf16 autocast tracks fp32 within 3% per logged loss over 60 steps (same init and data)."""
    curves = {}
    for precision in ("fp32", "bf16"):
        layout, ds, model = _setup(tiny_codes)
        batches = IndexBatches(ds.tensors, 20, seed=0)
        cfg = OptimConfig(batch_size=20, lr=2e-3, epochs=12, warmup_steps=5, precision=precision,
                          class_dropout=0.0, log_every=5)
        curve = []
        torch.manual_seed(0)
        fit(model, GPTObjective(layout), batches, len(batches), None, cfg,
            callback=lambda m, s, c=curve: "train/loss" in m and c.append(m["train/loss"]))
        curves[precision] = curve
    assert curves["fp32"][-1] < curves["fp32"][0] - 0.2  # it learned something
    for a, b in zip(curves["fp32"], curves["bf16"], strict=True):
        assert abs(a - b) / a < 0.03
    assert math.isfinite(curves["bf16"][-1])


class _DivergesAt(GPTObjective):
    """The GPT objective whose loss becomes infinite from optimizer step `at` on (a stand-in for
    a learning rate that blows up: deterministic on every CPU)."""

    def __init__(self, layout, at):
        super().__init__(layout)
        self.at, self.calls = at, 0

    def loss(self, model, batch, precision, device, train):
        loss, count = super().loss(model, batch, precision, device, train)
        self.calls += train
        return (loss * float("inf") if train and self.calls > self.at else loss), count


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_codes, tmp_path, grad_clip):
    from arplatform.core.errors import TrainingError

    layout, ds, model = _setup(tiny_codes)
    batches = IndexBatches(ds.tensors, 16, seed=0)
    cfg = OptimConfig(batch_size=16, lr=1e-3, epochs=3, warmup_steps=1, precision="fp32", grad_clip=grad_clip)
    spe = len(batches)
    with pytest.raises(TrainingError, match=rf"not finite at step {spe + 3} \(epoch 1\).*lower optim.lr") as e:
        fit(model, _DivergesAt(layout, spe + 2), batches, spe, lambda: batches(0), cfg,
            checkpoint_dir=str(tmp_path))
    assert "\n" not in str(e.value) and "last.pt" in str(e.value)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 0 and last["step"] == spe  # the epoch-0 checkpoint, untouched
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step never reached the weights


def _train_three_steps(tiny_codes, compile_setting):
    layout, ds, _ = _setup(tiny_codes)
    torch.manual_seed(0)
    model = make_model(layout)
    cfg = OptimConfig(batch_size=8, epochs=1, max_steps=3, warmup_steps=1, class_dropout=0.0, precision="fp32",
                      compile=compile_setting, log_every=1)
    losses = []
    fit(model, GPTObjective(layout, 0.0), IndexBatches(ds.tensors, 8, shuffle=False), 3, None, cfg,
        callback=lambda m, step: losses.append(m["train/loss"]) if "train/loss" in m else None)
    return model, losses


def test_a_training_step_that_cannot_compile_trains_eagerly_with_a_warning(tiny_codes, monkeypatch):
    """compile=true where the compiler fails (here: a compiled model whose first call raises, as
    a missing C++ toolchain does): one warning, then the eager step, and the same weights."""
    eager, eager_losses = _train_three_steps(tiny_codes, "false")

    def broken_compile(model, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile failed, training eagerly: RuntimeError: no C"):
        fallback, losses = _train_three_steps(tiny_codes, "true")
    assert losses == eager_losses
    assert all(torch.equal(a, b) for a, b in zip(eager.state_dict().values(), fallback.state_dict().values(),
                                                 strict=True))


@pytest.mark.slow
def test_a_compiled_training_step_equals_the_eager_one(tiny_codes):
    """torch.compile (inductor, about 20 s to compile here) trains what the eager loop trains."""
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2))
    except Exception as e:  # noqa: BLE001 - no toolchain: say so
        pytest.skip(f"torch.compile does not work on this machine: {type(e).__name__}: {e}")
    eager, eager_losses = _train_three_steps(tiny_codes, "false")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a silent fallback to eager would pass unseen
        compiled, losses = _train_three_steps(tiny_codes, "true")
    assert losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    for a, b in zip(eager.state_dict().values(), compiled.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_token_dropout_replaces_only_codes_and_about_p_of_them():
    layout = TokenLayout(num_codes=16, num_classes=3)
    codes = torch.randint(0, 16, (64, 50))
    ids = torch.cat([torch.full((64, 1), layout.class_id(1)), torch.full((64, 1), layout.bos_id), codes,
                     torch.full((64, 1), layout.eos_id)], dim=1)
    torch.manual_seed(0)
    dropped = drop_code_tokens(ids, layout, 0.25)
    assert torch.equal(dropped[:, :2], ids[:, :2]) and torch.equal(dropped[:, -1], ids[:, -1])
    assert int(dropped[:, 2:-1].max()) < 16
    changed = (dropped != ids).float().mean().item() * ids.shape[1] / 50
    assert 0.15 < changed < 0.25  # 0.25 × 15/16 land on another code
    assert drop_code_tokens(ids, layout, 0.0) is ids
