"""The training job: the core loop data-parallel on Ray Train's TorchTrainer.

Driver (`run_training`): resolve and check the data, start or resume the MLflow
run and the Ray run, fit, then sample a grid from best.pt and log artifacts.
Workers (`train_worker`): receive a plain dict, build the GPT, wrap it for DDP,
iterate their shard with `pad_collate`, run `core.loop.fit`, report a checkpoint
every epoch.

Run state: `<output_root>/transformer/<name>/run.json` names the latest run of
a config (Ray run name + MLflow run id); `resume=true` continues it from the
latest checkpoint that Ray registered under `<output_root>/ray/<run name>/`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid

import numpy as np
import torch

from ..config import TrainJobConfig, from_dict, to_dict
from ..core.checkpoint import load_checkpoint, load_model
from ..core.errors import CheckpointError
from ..core.io import save_json, save_npy
from ..core.loop import GPTObjective, fit
from ..core.model import GPT, GPTConfig
from ..core.tokens import TokenLayout
from .data import build_datasets, pad_collate_numpy, preflight, resolve_files


def model_config(job: TrainJobConfig, layout: TokenLayout, num_positions: int) -> GPTConfig:
    m = job.model
    full = layout.sequence_length(num_positions) - 1  # inputs per sequence
    return GPTConfig(vocab_size=layout.vocab_size, seq_len=min(m.seq_len or full, full), embed_dim=m.embed_dim,
                     num_layers=m.num_layers, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, dropout=m.dropout)


# ---------------------------------------------------------------------------
# Worker side


def train_worker(config: dict) -> dict:
    """Ray Train's per-worker function. `config` is plain data (see `run_training`)."""
    import ray.train
    import ray.train.torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" per epoch
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    job = from_dict(TrainJobConfig, config["job"])
    threads = job.trainer.threads_per_worker or max(1, (os.cpu_count() or 1) // ctx.get_local_world_size())
    torch.set_num_threads(threads)
    layout = TokenLayout.from_dict(config["layout"])
    cfg = job.optim
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = ray.train.torch.prepare_model(GPT(GPTConfig(**config["model"])))
    torch.manual_seed(cfg.seed + 1000 * rank)  # but different dropout masks

    collate = pad_collate_numpy(layout.pad_id)
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")

    def train_batches(epoch: int, skip: int):
        it = train_shard.iter_torch_batches(batch_size=cfg.batch_size, collate_fn=collate, drop_last=True,
                                            local_shuffle_buffer_size=8 * cfg.batch_size,
                                            local_shuffle_seed=cfg.seed * 1000 + epoch * 10 + rank)
        for i, batch in enumerate(it):
            if i >= skip:
                yield batch

    val_cache: list = []

    def val_batches():
        # The held-out shard is small and fixed: read it through Ray Data once and keep the
        # batches, instead of re-running the streaming split every epoch (~1-2 s each).
        if not val_cache:
            val_cache.extend(val_shard.iter_torch_batches(batch_size=256, collate_fn=collate))
        return val_cache

    def reduce(t: torch.Tensor) -> torch.Tensor:
        if world > 1:
            torch.distributed.all_reduce(t)
        return t

    workdir = tempfile.mkdtemp(prefix="arplatform-worker-")
    resume_from, resumed = None, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:  # loaded once here; fit resumes from the dict
            resume_from = load_checkpoint(os.path.join(d, "last.pt"), map_location=device, expected_layout=layout)
        resumed = {"epoch": resume_from["epoch"], "step": resume_from["step"]}
        if rank == 0:
            print(f"resuming from epoch {resumed['epoch']} (step {resumed['step']}) of {checkpoint.path}", flush=True)

    mlflow_logger = None
    if rank == 0 and config["mlflow_run_id"]:
        from ..tracking import MetricsLogger

        mlflow_logger = MetricsLogger(config["tracking_uri"], config["mlflow_run_id"])

    def callback(metrics: dict, step: int):  # rank 0 only (fit calls it on the main process)
        if "train/loss" in metrics:
            # every rank trains on an equal share, so the job's rate is world × rank 0's
            metrics = dict(metrics, **{"train/job_tokens_per_s": metrics["train/tokens_per_s"] * world})
            print(f"step {step}: train/loss {metrics['train/loss']:.4f}, lr {metrics['train/lr']:.2e}, "
                  f"{metrics['train/job_tokens_per_s']:.0f} tokens/s ({world} workers)", flush=True)
        if mlflow_logger is not None:
            mlflow_logger(metrics, step)

    def on_epoch_end(epoch: int, metrics: dict):
        if rank == 0:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val/"))
            print(f"epoch {epoch}: {shown}", flush=True)
            report_dir = tempfile.mkdtemp(dir=workdir)
            shutil.copy(os.path.join(config["checkpoint_dir"], "last.pt"), report_dir)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(report_dir))
            shutil.rmtree(report_dir, ignore_errors=True)
        else:
            ray.train.report(metrics)  # a barrier: every rank reports each epoch

    start_step = resumed["step"] if resumed else 0
    t_fit = time.perf_counter()
    try:
        final = fit(model, GPTObjective(layout, cfg.class_dropout), train_batches, config["steps_per_epoch"],
                    val_batches, cfg, device=device, checkpoint_dir=config["checkpoint_dir"],
                    resume_from=resume_from, grid_shape=config["grid_shape"], run_config=config["job"],
                    callback=callback, on_epoch_end=on_epoch_end, reduce=reduce, is_main=rank == 0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - t_fit
    tokens = (final["step"] - start_step) * cfg.batch_size * cfg.grad_accum_steps * config["model"]["seq_len"] * world
    return {"final": final, "resumed": resumed, "world_size": world, "fit_seconds": seconds,
            "input_tokens": tokens, "tokens_per_s": tokens / seconds, "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------
# Driver side


def output_dir(job: TrainJobConfig) -> str:
    return os.path.abspath(os.path.join(job.output_root, "transformer", job.name))


def _latest_ray_checkpoint(run_path: str) -> str:
    from ray.train import Result

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # its "A run snapshot was found…" notice
    try:
        result = Result.from_path(run_path)
    except Exception as e:  # noqa: BLE001 - any failure here means there is nothing to resume
        raise CheckpointError(f"{run_path}: no Ray run state to resume from ({type(e).__name__}: {e})") from e
    if result.checkpoint is None:
        raise CheckpointError(f"{run_path}: the run registered no checkpoint; nothing to resume from")
    return os.path.join(result.checkpoint.path, "last.pt")


def resolve_run(job: TrainJobConfig, out: str, storage: str) -> tuple[str, str | None, str | None]:
    """(Ray run name, MLflow run id to continue or None, checkpoint to resume from or None)."""
    state_path = os.path.join(out, "run.json")
    if job.resume:
        if not os.path.exists(state_path):
            raise CheckpointError(f"{state_path}: resume=true but this config has no earlier run")
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        name = job.run_name or state["run_name"]
        return name, state.get("mlflow_run_id"), _latest_ray_checkpoint(os.path.join(storage, name))
    name = job.run_name or f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if os.path.exists(os.path.join(storage, name)):
        raise CheckpointError(f"{os.path.join(storage, name)}: run {name!r} exists; pass resume=true to continue "
                              "it or another run_name")
    return name, None, None


def sample_grid(job: TrainJobConfig, best_path: str, codebook: str | None, out: str) -> list[str]:
    """Sample codes from best.pt; decode them to a PNG grid when the codebook names its VAE."""
    from ..core.codebook import load_codebook_file
    from ..core.sampling import codes_from_sequences, generate_autoregressive

    model, layout, ckpt = load_model(best_path)
    s = job.sample
    n = s.num_samples
    labels = torch.arange(n) % layout.num_classes if layout.conditional else None
    seqs = generate_autoregressive(model, layout, int(np.prod(ckpt["grid_shape"])), num_samples=n,
                                   class_labels=labels, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                   cfg_scale=s.cfg_scale, generator=torch.Generator().manual_seed(job.optim.seed))
    codes = codes_from_sequences(seqs, layout).numpy().astype(np.int32)
    written = [save_npy(codes, os.path.join(out, "samples_codes.npy"))]
    codebook = load_codebook_file(codebook) if codebook else None  # read once, for its VAE path and vectors
    vae_path = codebook["config"].get("vae_checkpoint") if codebook else None
    if vae_path and os.path.exists(vae_path):
        from ..core.decode import decode_codes_to_images
        from ..images import make_grid, save_png

        images = decode_codes_to_images(codes, codebook, vae_path)
        order = np.argsort(labels.numpy(), kind="stable") if labels is not None else np.arange(n)
        columns = max(1, n // max(1, layout.num_classes)) if labels is not None else 8
        written.append(save_png(make_grid(images.numpy()[order], columns=columns),
                                os.path.join(out, "samples_grid.png")))
    return written


def run_training(job: TrainJobConfig, config_name: str | None = None, log=print) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .. import tracking
    from .ray_env import check_cpu_budget, init_ray

    t0 = time.perf_counter()
    files = resolve_files(job.data)
    pre = preflight(job.data, files)
    out = output_dir(job)
    storage = os.path.abspath(os.path.join(job.output_root, "ray"))
    run_name, mlflow_run_id, resume_ckpt = resolve_run(job, out, storage)
    if resume_ckpt:  # refuse a broken checkpoint here, not after Ray has retried it max_failures times
        load_checkpoint(resume_ckpt, expected_layout=pre.layout)
    gpt_cfg = model_config(job, pre.layout, pre.num_positions)

    ray = init_ray(job.trainer.num_cpus)
    check_cpu_budget(ray, job.trainer.num_workers, job.trainer.cpus_per_worker, job.trainer.use_gpu)
    train_ds, val_ds = build_datasets(files, pre, job.data, gpt_cfg.seq_len, job.optim.seed)
    n_train, n_val = train_ds.count(), val_ds.count()
    per_worker = n_train // job.trainer.num_workers
    steps_per_epoch = per_worker // job.optim.batch_size // job.optim.grad_accum_steps
    if steps_per_epoch == 0:
        raise CheckpointError(f"{n_train} training examples over {job.trainer.num_workers} workers give no full "
                              f"batch of {job.optim.batch_size}; lower optim.batch_size")
    global_batch = job.optim.batch_size * job.trainer.num_workers * job.optim.grad_accum_steps
    log(f"data: {n_train} train / {n_val} val examples of {gpt_cfg.seq_len} tokens, layout {pre.layout}; "
        f"batch {job.optim.batch_size} per worker × {job.trainer.num_workers} workers × "
        f"{job.optim.grad_accum_steps} accumulation = {global_batch} global, {steps_per_epoch} steps/epoch")

    uri = tracking.tracking_uri(job.tracking.tracking_uri, job.output_root) if job.tracking.enabled else None
    resolved = to_dict(job)
    if uri and mlflow_run_id is None:
        params = {**resolved, "layout": pre.layout.to_dict(), "model_resolved": gpt_cfg.to_dict(),
                  "batch": {"per_worker": job.optim.batch_size, "global": global_batch},
                  "data_examples": {"train": n_train, "val": n_val}}
        mlflow_run_id = tracking.start_run(uri, job.tracking.experiment, job.output_root, run_name, params,
                                           {"config_name": config_name or job.name, "ray_run": run_name})
    save_json({"run_name": run_name, "mlflow_run_id": mlflow_run_id, "tracking_uri": uri,
               "ray_storage": storage, "config_name": config_name}, os.path.join(out, "run.json"))

    worker_config = {
        "job": resolved, "layout": pre.layout.to_dict(), "model": gpt_cfg.to_dict(),
        "grid_shape": list(pre.grid_shape), "steps_per_epoch": steps_per_epoch,
        "checkpoint_dir": os.path.join(out, "checkpoints"), "tracking_uri": uri, "mlflow_run_id": mlflow_run_id,
    }
    t = job.trainer
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=worker_config,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(name=run_name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
                             logging_config=LoggingConfig(log_level="WARNING")),
        datasets={"train": train_ds, "val": val_ds},
    )
    try:
        result = trainer.fit()
    except Exception:
        if uri:
            tracking.finish_run(uri, mlflow_run_id, "FAILED")
        raise
    summary = dict(result.return_value or {})
    best = os.path.join(out, "checkpoints", "best.pt")
    artifacts = [best, save_json(resolved | {"config_name": config_name}, os.path.join(out, "config.json"))]
    artifacts += sample_grid(job, best, files.codebook, out)
    if uri:
        for path in artifacts:
            tracking.log_artifact(uri, mlflow_run_id, path)
        tracking.finish_run(uri, mlflow_run_id)
    summary.update({"run_name": run_name, "mlflow_run_id": mlflow_run_id, "tracking_uri": uri,
                    "output_dir": out, "ray_run_path": result.path, "seconds": time.perf_counter() - t0})
    save_json(summary, os.path.join(out, "summary.json"))
    log(f"done in {summary['seconds']:.0f} s: best val {summary['final'].get('best_val_loss', float('nan')):.4f} "
        f"nats/token\n  checkpoints: {out}/checkpoints/{{best,last}}.pt\n  samples:     {out}/samples_*"
        f"\n  Ray run:     {result.path}")
    if uri:
        log(f"  MLflow run:  {mlflow_run_id} in {uri}\n  look at it:  mlflow ui --backend-store-uri {uri} "
            "--host 127.0.0.1")
    return summary
