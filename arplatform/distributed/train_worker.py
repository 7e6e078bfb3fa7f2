"""Ray Train's per-worker function: the core loop on this worker's shard. It gets plain data
(the job's config, the checked data facts, MLflow ids) and plans its own model and steps, so
each Tune trial trains what its config says; rank 0's checkpoints leave by `ray.train.report`."""

from __future__ import annotations

import logging
import os
import shutil
import time

import torch

from ..config import TrainJobConfig, from_dict
from ..config.train_plan import DataFacts, plan_training, torch_threads
from ..core.checkpoint import load_checkpoint
from ..core.errors import TrainingError
from ..core.io import scratch_dir
from ..core.loop import GPTObjective, checkpoint_activations, fit
from ..core.model import GPT
from ..core.startup import first_batch_times
from .code_data import worker_batches


def train_worker(config: dict) -> dict:
    import ray.train
    import ray.train.torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" per epoch
    times = {"entered": time.time()}
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    job, facts = from_dict(TrainJobConfig, config["job"]), DataFacts.from_dict(config["facts"])
    plan = plan_training(job, facts, world)
    torch.set_num_threads(torch_threads(job, ctx.get_local_world_size()))
    device = ray.train.torch.get_device()
    torch.manual_seed(job.optim.seed)  # the same initial weights on every rank
    model = GPT(plan.model)
    if job.model.activation_checkpointing:
        checkpoint_activations(model)  # before DDP or FSDP wraps it
    if job.trainer.strategy == "fsdp":
        model = shard_model(model.to(device))
    else:
        model = ray.train.torch.prepare_model(model)
    torch.manual_seed(job.optim.seed + 1000 * rank)  # but different dropout masks

    train, val = worker_batches(config["held_rows"], facts.layout, plan.seq_len, job.optim.batch_size,
                                job.optim.seed, rank, world)
    train = first_batch_times(train, times)

    # rank 0 writes last.pt / best.pt on its own node and hands them to Ray each epoch
    # (`epoch_reporter`): they reach the run's storage wherever this worker runs
    with scratch_dir("checkpoints") as checkpoint_dir:  # (one a killed worker left is removed by the next)
        resume_from = load_resume_checkpoint(facts, device, rank, checkpoint_dir)
        start_step = resume_from["step"] if resume_from else 0
        times["ready"] = time.time()
        t_fit = time.perf_counter()
        objective = GPTObjective(facts.layout, job.optim.class_dropout, job.optim.token_dropout)
        try:
            final = fit(model, objective, train, plan.steps_per_epoch, val,
                        job.optim, device=device, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                        grid_shape=facts.grid_shape, run_config=dict(config["job"], **facts.identity()),
                        callback=metrics_callback(config, world, total_steps(job, plan), start_step) if rank == 0
                        else None,
                        on_epoch_end=epoch_reporter(checkpoint_dir, rank), reduce=all_reduce if world > 1 else None,
                        is_main=rank == 0)
        except TrainingError as e:
            # every rank stops at the same step (the norm is all-reduced); returning, not raising,
            # keeps Ray from replaying a deterministic divergence max_failures times
            return {"error": str(e)}
    seconds = time.perf_counter() - t_fit
    tokens = (final["step"] - start_step) * job.optim.batch_size * job.optim.grad_accum_steps * plan.seq_len * world
    resumed = {"epoch": resume_from["epoch"], "step": resume_from["step"]} if resume_from else None
    return {"final": final, "resumed": resumed, "world_size": world, "fit_seconds": seconds,
            "steps_per_epoch": plan.steps_per_epoch, "model": plan.model.to_dict(),
            "input_tokens": tokens, "tokens_per_s": tokens / seconds, "torch_threads": torch.get_num_threads(),
            "activation_checkpointing": job.model.activation_checkpointing, "strategy": job.trainer.strategy,
            "worker_nodes": worker_nodes(world), "startup_times": times}


def shard_model(model: GPT) -> GPT:
    """FSDP2: each block's weights, gradients and optimizer state split across workers, gathered
    a block at a time; the root unit holds the embedding, tied output layer and last norm.
    Checkpoints are whole either way (`core.loop.full_state`)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def worker_nodes(world: int) -> list[str]:
    """The Ray node of every rank, in rank order (the job's summary says where it ran)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [node]
    nodes = [None] * world
    torch.distributed.all_gather_object(nodes, node)
    return nodes


def load_resume_checkpoint(facts: DataFacts, device, rank: int, checkpoint_dir: str) -> dict | None:
    """The last.pt of the latest checkpoint Ray registered (after a restart or a resume), loaded
    once; its best.pt goes into this worker's `checkpoint_dir`, where the loop keeps it."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        ckpt = load_checkpoint(os.path.join(d, "last.pt"), map_location=device, expected_layout=facts.layout)
        if os.path.exists(os.path.join(d, "best.pt")):
            shutil.copy(os.path.join(d, "best.pt"), checkpoint_dir)
    if rank == 0:
        print(f"resuming from epoch {ckpt['epoch']} (step {ckpt['step']}) of {checkpoint.path}", flush=True)
    return ckpt


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(t)
    return t


def total_steps(job, plan) -> int:
    steps = job.optim.epochs * plan.steps_per_epoch
    return min(steps, job.optim.max_steps) if job.optim.max_steps else steps


def metrics_callback(config: dict, world: int, steps: int, start_step: int):
    """Rank 0's metrics: a console line per log step (Ray forwards lines, not bars), and MLflow."""
    from ..core.progress import duration

    mlflow_logger = None
    if config["mlflow_run_id"]:
        from ..tracking.mlflow_runs import MetricsLogger

        mlflow_logger = MetricsLogger(config["tracking_uri"], config["mlflow_run_id"])
    t0 = time.perf_counter()

    def callback(metrics: dict, step: int):
        if "train/loss" in metrics:
            # every rank trains on an equal share, so the job's rate is world × rank 0's
            metrics = dict(metrics, **{"train/job_tokens_per_s": metrics["train/tokens_per_s"] * world})
            rate = (step - start_step) / max(time.perf_counter() - t0, 1e-9)
            left = f", {duration((steps - step) / rate)} left" if rate > 0 and step < steps else ""
            print(f"step {step}/{steps} ({step / max(steps, 1):.0%}): train/loss {metrics['train/loss']:.4f}, "
                  f"lr {metrics['train/lr']:.2e}, {metrics['train/job_tokens_per_s']:.0f} tokens/s ({world} workers)"
                  f"{left}", flush=True)
        if mlflow_logger is not None:
            mlflow_logger(metrics, step)

    return callback


def epoch_reporter(checkpoint_dir: str, rank: int):
    """Every rank reports each epoch (a barrier); rank 0 attaches its last.pt and best.pt as Ray's
    checkpoint, which Ray uploads to the run's storage (a bucket on a cluster)."""
    import ray.train

    def on_epoch_end(epoch: int, metrics: dict):
        metrics = dict(metrics, epochs_done=epoch + 1)  # 1-based: a sweep's ASHA rungs count epochs
        if rank != 0:
            ray.train.report(metrics)
            return
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val/"))
        print(f"epoch {epoch}: {shown}", flush=True)
        report_dir = os.path.join(checkpoint_dir, "report")  # inside it: a killed worker's goes with it
        os.makedirs(report_dir)
        try:
            for name in ("last.pt", "best.pt"):
                if os.path.exists(os.path.join(checkpoint_dir, name)):
                    shutil.copy(os.path.join(checkpoint_dir, name), report_dir)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(report_dir))
        finally:
            shutil.rmtree(report_dir, ignore_errors=True)

    return on_epoch_end
