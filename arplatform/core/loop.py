"""The training loop: AdamW, warmup + cosine, clipping, accumulation, bf16, held-out loss,
best/last checkpoints, exact resume. It knows nothing of Ray or MLflow: metrics leave through
`callback`; a distributed wrapper supplies its batches, reduction and end-of-epoch hook."""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, unwrap_model
from .data import IGNORE_INDEX
from .errors import CheckpointError, TrainingError
from .precision import PRECISIONS, autocast, choose_precision
from .tokens import TokenLayout

Batch = dict[str, torch.Tensor]
MetricsCallback = Callable[[dict[str, float], int], None]


@dataclass
class OptimConfig:
    batch_size: int = 64  # per process; the global batch is batch_size × processes × grad_accum_steps
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr × min_lr_ratio
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    epochs: int = 10
    max_steps: int = 0  # stop after this many optimizer steps (0 = run every epoch); the schedule is unchanged
    warmup_steps: int = 50
    grad_clip: float = 1.0  # 0 = off
    grad_accum_steps: int = 1
    precision: str = "auto"  # auto: bf16 where measured faster than fp32 (core/precision.py), else fp32
    compile: str = "auto"  # torch.compile the training forward: auto (on CUDA) | true | false; eager if it fails
    class_dropout: float = 0.1  # classifier-free guidance: P(class token → null class)
    # P(an input code → a random code) while training; the targets stay the true codes, so the
    # model learns to continue from its own slips (exposure bias); 0 = off
    token_dropout: float = 0.0
    # an exponential moving average of the weights (LlamaGen, MaskGIT): 0 = off; with it, validation
    # scores the average and best.pt holds it (last.pt keeps both, to resume exactly)
    ema_decay: float = 0.0
    seed: int = 0
    log_every: int = 20

    def __post_init__(self):
        for name, least in (("batch_size", 1), ("epochs", 1), ("grad_accum_steps", 1), ("log_every", 1),
                            ("max_steps", 0), ("warmup_steps", 0), ("seed", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"OptimConfig.{name} must be an int >= {least}, got {v!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ValueError(f"OptimConfig.lr must be a finite number in (0, 1], got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"OptimConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("min_lr_ratio", "class_dropout", "token_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"OptimConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"OptimConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"OptimConfig.{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"OptimConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compile not in ("auto", "true", "false"):
            raise ValueError(f"OptimConfig.compile must be one of auto, true, false, got {self.compile!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def training_probe(model: torch.nn.Module, objective, device, batch_size: int = 8) -> Callable[[str], None]:
    """One forward/backward on a synthetic batch, for `choose_precision`; the RNG state is
    restored, so whether a run probed never changes its trajectory."""
    batch = objective.synthetic_batch(unwrap_model(model), batch_size)

    def probe(precision: str) -> None:
        with torch.random.fork_rng(devices=[]):
            loss, count = objective.loss(model, batch, precision, device, train=True)
            (loss / count.clamp(min=1)).backward()
        model.zero_grad(set_to_none=True)

    return probe


def probe_key(objective, model: torch.nn.Module, batch_size: int = 8) -> str:
    return f"{objective.kind}:{sorted(unwrap_model(model).config.to_dict().items())}:b{batch_size}"


TrainConfig = OptimConfig  # its earlier name: code written against it keeps working


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Linear warmup to cfg.lr, then cosine down to lr × min_lr_ratio at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def checkpoint_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Activation checkpointing (torchtitan's "full" mode): each block keeps only its input and
    recomputes its activations in the backward (the same dropout masks: the RNG is replayed).
    Applied from outside; the wrapper keeps every state-dict key, so checkpoints load either way."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                             preserve_rng_state=True)
    return model


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not norms, biases or the tied embedding's rows twice)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # the fused CUDA kernel: one launch per step instead of one per tensor
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=all(p.is_cuda for p in params))


def drop_class_tokens(input_ids: torch.Tensor, layout: TokenLayout, p: float) -> torch.Tensor:
    """Classifier-free guidance training: with probability p a row's class token becomes null."""
    if not layout.conditional or p == 0.0:
        return input_ids
    first = input_ids[:, 0]
    is_class = (first >= layout.first_class_id) & (first < layout.null_class_id)
    drop = is_class & (torch.rand(first.shape, device=first.device) < p)
    if not drop.any():
        return input_ids
    input_ids = input_ids.clone()
    input_ids[drop, 0] = layout.null_class_id
    return input_ids


def drop_code_tokens(input_ids: torch.Tensor, layout: TokenLayout, p: float) -> torch.Tensor:
    """Each input code becomes a random code with probability p (specials and class tokens
    kept): the model sees corrupted contexts, as it will from its own samples."""
    if p == 0.0:
        return input_ids
    is_code = input_ids < layout.num_codes
    drop = is_code & (torch.rand(input_ids.shape, device=input_ids.device) < p)
    noise = torch.randint_like(input_ids, layout.num_codes)
    return torch.where(drop, noise, input_ids)


class GPTObjective:
    """Next-token cross-entropy for the GPT; class and token dropout while training."""

    kind, unit = "gpt", "tokens"

    def __init__(self, layout: TokenLayout, class_dropout: float = OptimConfig.class_dropout,
                 token_dropout: float = OptimConfig.token_dropout):
        self.layout, self.class_dropout, self.token_dropout = layout, class_dropout, token_dropout

    def loss(self, model, batch: Batch, precision: str, device, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy in nats, number of scored targets) of one batch."""
        x, y = batch["input_ids"].to(device), batch["labels"].to(device)
        if train:
            x = drop_class_tokens(x, self.layout, self.class_dropout)
            x = drop_code_tokens(x, self.layout, self.token_dropout)
        with autocast(precision, device):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, (y != IGNORE_INDEX).sum()

    def metrics(self, mean_loss: float) -> dict[str, float]:
        return {"val/loss": mean_loss, "val/bits_per_token": mean_loss / math.log(2)}

    def synthetic_batch(self, model, batch_size: int) -> Batch:
        """Random code tokens of the model's full context: what a precision probe times."""
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, self.layout.num_codes, (batch_size, model.config.seq_len + 1), generator=g)
        return {"input_ids": x[:, :-1], "labels": x[:, 1:]}

    def checkpoint_fields(self) -> dict:
        return {"layout": self.layout}


@torch.no_grad()
def evaluate(model, objective, batches: Iterable[Batch], precision: str, device, reduce: Callable | None = None
             ) -> dict[str, float]:
    """Held-out mean loss and the objective's metrics; `reduce` all-reduces (sum, count) across ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in batches:
        loss, count = objective.loss(model, batch, precision, device, train=False)
        totals += torch.stack([loss.double(), count.double()])
    model.train(was_training)
    if reduce is not None:
        totals = reduce(totals)
    return objective.metrics((totals[0] / totals[1].clamp(min=1)).item())


class IndexBatches:
    """Batches of equally long tensors in a seeded order per epoch, drawn from (seed, epoch)
    only: resuming at (epoch, batch) needs no saved iterator state."""

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        self.tensors, self.batch_size = dict(tensors), batch_size
        self.seed, self.shuffle = seed, shuffle
        self.n = len(next(iter(self.tensors.values())))
        self.num_batches = self.n // batch_size if drop_last else math.ceil(self.n / batch_size)
        if self.num_batches == 0:
            raise ValueError(f"{self.n} examples are fewer than one batch of {batch_size}")

    def __len__(self) -> int:
        return self.num_batches

    def __call__(self, epoch: int = 0, skip: int = 0) -> Iterator[Batch]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for b in range(skip, self.num_batches):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield {k: v[idx] for k, v in self.tensors.items()}


class WeightAverage:
    """An exponential moving average of each rank's (possibly sharded) weights, swapped in to
    validate and save. The decay ramps up as (1+n)/(10+n) (timm's, torch-ema's), so early
    weights do not linger in a short run."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.params = list(model.parameters())
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, param in zip(self.shadow, self.params, strict=True):
            average.lerp_(param.detach(), weight)

    @contextmanager
    def applied(self):
        """The average in the model's parameters inside the block; its own weights after."""
        own = [p.detach().clone() for p in self.params]
        self._copy_into_params(self.shadow)
        try:
            yield
        finally:
            self._copy_into_params(own)

    @torch.no_grad()
    def _copy_into_params(self, tensors) -> None:
        for param, value in zip(self.params, tensors, strict=True):
            param.copy_(value)

    def load(self, model: torch.nn.Module, average_state: dict, updates: int) -> None:
        """The average from a checkpoint's whole state, through the model (a sharded one takes its shard)."""
        own = [p.detach().clone() for p in self.params]
        load_full_state(model, None, {"model_state_dict": average_state})
        self.shadow = [p.detach().clone() for p in self.params]
        self._copy_into_params(own)
        self.updates = updates


def check_finite(model: torch.nn.Module, grad_clip: float, step: int, epoch: int, last_path: str | None) -> None:
    """Clip the gradient and stop before the optimizer step if its norm is not finite: no NaN
    reaches a checkpoint. The norm is global (DDP: all-reduced; FSDP: over the shards), so every
    rank stops at the same step."""
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if hasattr(norm, "full_tensor"):  # a sharded model's norm (a DTensor): the same value on every rank
        norm = norm.full_tensor()
    if not torch.isfinite(norm):
        kept = f"; the last good checkpoint is {last_path}" if last_path and os.path.exists(last_path) else ""
        raise TrainingError(f"the gradient is not finite at step {step + 1} (epoch {epoch}): the loss diverged; "
                            f"lower optim.lr or keep optim.grad_clip > 0{kept}")


def decide_precision(requested: str, model, objective, device, log: Callable[[str], None] | None = print) -> str:
    """`choose_precision` probed with this model's training step; `auto` logs what and why."""
    choice = choose_precision(requested, device, training_probe(model, objective, device), probe_key(objective, model))
    if requested == "auto" and log is not None:
        log(f"precision auto → {choice.precision}: {choice.reason}")
    return choice.precision


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` is sharded by FSDP2 (`distributed.train_worker.shard_model`)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model: torch.nn.Module, optimizer=None) -> tuple[dict, dict | None]:
    """The model's (and optimizer's) whole state; a sharded model's gathered onto the CPU (a
    collective: every rank calls it), its optimizer state keyed by parameter name."""
    if not is_sharded(model):
        return unwrap_model(model).state_dict(), optimizer.state_dict() if optimizer is not None else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None)


def load_full_state(model: torch.nn.Module, optimizer, ckpt: dict) -> None:
    """`full_state`'s inverse (optimizer None: the model only)."""
    if not is_sharded(model):
        unwrap_model(model).load_state_dict(ckpt["model_state_dict"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, ckpt["model_state_dict"], options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, ckpt["optimizer_state_dict"], options=options)


def restore(model, optimizer, objective, resume_from: str | dict, device,
            average: WeightAverage | None = None) -> tuple[int, float]:
    """Weights, optimizer, RNG and weight average from a last.pt (a path, or its checked dict)
    → (step, best validation loss so far)."""
    if isinstance(resume_from, dict):
        ckpt, resume_from = resume_from, "the resume checkpoint"
    else:
        ckpt = load_checkpoint(resume_from, map_location=device, kind=objective.kind,
                               expected_layout=getattr(objective, "layout", None))
    if "optimizer_state_dict" not in ckpt or "rng_state" not in ckpt:
        raise CheckpointError(f"{resume_from}: has no optimizer/RNG state; cannot resume exactly")
    try:
        load_full_state(model, optimizer, ckpt)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{resume_from}: does not match this model ({first})") from e
    if average is not None:
        if "ema_state_dict" not in ckpt:
            raise CheckpointError(f"{resume_from}: was saved without a weight average (optim.ema_decay=0); "
                                  f"resume with optim.ema_decay=0")
        average.load(model, ckpt["ema_state_dict"], ckpt["step"])
    ranks = ckpt.get("rank_rng_states")
    rank, world = rank_and_world()
    set_rng_state(ranks[rank] if ranks and len(ranks) == world else ckpt["rng_state"])
    return ckpt["step"], ckpt["metrics"].get("best_val_loss", math.inf)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 when it trains alone)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def every_rank(value) -> list | None:
    """`value` from every rank, in rank order (a collective); None when this process trains alone."""
    import torch.distributed as dist

    world = rank_and_world()[1]
    if world == 1:
        return None
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


@contextmanager
def heap_frozen():
    """Hide the objects alive when training starts (~400k in a Ray worker) from the cyclic
    garbage collector until the loop ends: its collections took 0.37 s of every 18 s epoch,
    frozen 0.05 s. A caller's own freeze is left alone."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Trainer:
    """One run of `fit`: model, objective, optimizer, and where the run is (step, best loss, stopped)."""

    def __init__(self, model, objective, cfg: OptimConfig, steps_per_epoch: int, device, checkpoint_dir, grid_shape,
                 run_config, callback, reduce, is_main: bool):
        self.model, self.objective, self.cfg, self.device = model, objective, cfg, torch.device(device)
        self.precision = decide_precision(cfg.precision, model, objective, self.device, print if is_main else None)
        self.optimizer = make_optimizer(model, cfg)
        self.average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        compile_it = cfg.compile == "true" or (cfg.compile == "auto" and self.device.type == "cuda")
        self.step_model = torch.compile(model) if compile_it else model  # (validation runs eagerly)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, cfg.epochs * steps_per_epoch
        self.step, self.best_val, self.stopped = 0, math.inf, False
        self.last_path = os.path.join(checkpoint_dir, "last.pt") if checkpoint_dir else None
        self.best_path = os.path.join(checkpoint_dir, "best.pt") if checkpoint_dir else None
        self.grid_shape, self.callback, self.reduce, self.is_main = grid_shape, callback, reduce, is_main
        self.run_config = dict(run_config or {}, train=cfg.to_dict(), precision=self.precision)

    def restore(self, resume_from) -> None:
        self.step, self.best_val = restore(self.model, self.optimizer, self.objective, resume_from, self.device,
                                           self.average)
        self.stopped = bool(self.cfg.max_steps and self.step >= self.cfg.max_steps)

    def metrics_so_far(self) -> dict:
        """What a run resumed after its last epoch returns: it has nothing left to do."""
        metrics = {"epoch": self.step // self.steps_per_epoch - 1, "step": self.step}
        return metrics | ({"best_val_loss": self.best_val} if math.isfinite(self.best_val) else {})

    def train_epoch(self, epoch: int, train_batches) -> None:
        """The optimizer steps of `epoch` still to do (a resumed run skips those done)."""
        cfg = self.cfg
        skip = self.step - epoch * self.steps_per_epoch
        window = Window()
        for batch in train_batches(epoch, skip * cfg.grad_accum_steps):
            loss_sum, count = self.train_loss(batch)
            (loss_sum / count.clamp(min=1) / cfg.grad_accum_steps).backward()
            window.add(loss_sum.item() / max(1, count.item()), int(count))
            if window.micro % cfg.grad_accum_steps:
                continue
            lr = self.optimizer_step(epoch)
            if self.step % cfg.log_every == 0:
                self.emit(window.metrics(lr, self.objective.unit) | {"epoch": epoch})
                window = Window()
            if cfg.max_steps and self.step >= cfg.max_steps:
                self.stopped = True
                return
            if self.step >= (epoch + 1) * self.steps_per_epoch:
                return

    def train_loss(self, batch):
        """The objective's (sum, count) through the compiled model; if compiling fails, eagerly."""
        try:
            return self.objective.loss(self.step_model, batch, self.precision, self.device, train=True)
        except Exception as err:  # noqa: BLE001 - any compiler failure: train eagerly rather than not at all
            if self.step_model is self.model:
                raise
            warnings.warn(f"torch.compile failed, training eagerly: {type(err).__name__}: {str(err)[:200]}",
                          stacklevel=2)
            self.step_model = self.model
            return self.objective.loss(self.model, batch, self.precision, self.device, train=True)

    def optimizer_step(self, epoch: int) -> float:
        lr = lr_at(self.step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        check_finite(self.model, self.cfg.grad_clip, self.step, epoch, self.last_path)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.average is not None:
            self.average.update()
        self.step += 1
        return lr

    def end_epoch(self, epoch: int, val_batches) -> dict:
        """Validation, best.pt when it improved (always, with nothing held out), last.pt; with a
        weight average, the average is validated and saved as best.pt."""
        metrics = {"epoch": epoch, "step": self.step}
        with self.average.applied() if self.average is not None else nullcontext():
            if val_batches is not None:
                metrics.update(evaluate(self.model, self.objective, val_batches(), self.precision, self.device,
                                        self.reduce))
                if metrics["val/loss"] < self.best_val:
                    self.best_val = metrics["val/loss"]
                    self.save(self.best_path, epoch, metrics, full=False)
            else:  # nothing held out: the latest weights are the best we know
                self.save(self.best_path, epoch, metrics, full=False)
        if math.isfinite(self.best_val):
            metrics["best_val_loss"] = self.best_val
        self.save(self.last_path, epoch, metrics, full=True)
        self.emit(metrics)
        return metrics

    def save(self, path: str | None, epoch: int, metrics: dict, full: bool) -> None:
        if not path:
            return
        state, optimizer_state = full_state(self.model, self.optimizer if full else None)  # every rank: sharded
        rank_rngs = every_rank(rng_state()) if full else None
        average_state = None
        if full and self.average is not None:
            with self.average.applied():  # copied: a state dict shares the parameters' storage
                average_state = {k: v.clone() for k, v in full_state(self.model)[0].items()}
        if self.is_main:
            save_checkpoint(path, self.model, kind=self.objective.kind, grid_shape=self.grid_shape,
                            train_config=self.run_config, step=self.step, epoch=epoch, metrics=metrics,
                            model_state=state, optimizer_state=optimizer_state, with_rng=full,
                            rank_rng_states=rank_rngs, average_state=average_state,
                            **self.objective.checkpoint_fields())

    def emit(self, metrics: dict) -> None:
        if self.callback is not None and self.is_main:
            self.callback(metrics, self.step)


class Window:
    """Training loss and throughput since the last log step."""

    def __init__(self):
        self.micro, self.loss, self.units, self.start = 0, 0.0, 0, time.perf_counter()

    def add(self, loss: float, units: int) -> None:
        self.micro, self.loss, self.units = self.micro + 1, self.loss + loss, self.units + units

    def metrics(self, lr: float, unit: str) -> dict:
        elapsed = time.perf_counter() - self.start
        return {"train/loss": self.loss / self.micro, "train/lr": lr,
                f"train/{unit}_per_s": self.units / max(elapsed, 1e-9)}


@heap_frozen()
def fit(model: torch.nn.Module, objective, train_batches: Callable[[int, int], Iterable[Batch]], steps_per_epoch: int,
        val_batches: Callable[[], Iterable[Batch]] | None, cfg: OptimConfig, *, device: torch.device | str = "cpu",
        checkpoint_dir: str | None = None, resume_from: str | dict | None = None, grid_shape=None,
        run_config: dict | None = None, callback: MetricsCallback | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None, reduce: Callable | None = None,
        is_main: bool = True) -> dict:
    """Train `model` in place on `objective` (e.g. `GPTObjective(layout)`); returns the final metrics.

    train_batches(epoch, skip) yields an epoch's micro-batches after skipping `skip`;
    steps_per_epoch counts optimizer steps. With `checkpoint_dir`: last.pt after every epoch
    (and at max_steps), best.pt whenever the validation loss improves. resume_from (a last.pt,
    or its loaded dict) continues exactly: weights, optimizer, RNG, step, place in the data order.
    Every rank takes part in a save, so give every rank a `checkpoint_dir`, or none.
    """
    trainer = Trainer(model, objective, cfg, steps_per_epoch, device, checkpoint_dir, grid_shape, run_config,
                      callback, reduce, is_main)
    if resume_from is not None:
        trainer.restore(resume_from)
    metrics = trainer.metrics_so_far()
    model.train()
    for epoch in range(trainer.step // steps_per_epoch, cfg.epochs):
        if trainer.stopped:
            break
        trainer.train_epoch(epoch, train_batches)
        metrics = trainer.end_epoch(epoch, val_batches)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return metrics
