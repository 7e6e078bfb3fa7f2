"""The training stage: the core loop data-parallel on Ray Train's TorchTrainer.

    run_train(job)
      1. check_data        resolve the code files and check every one, before Ray starts
      2. resume_target     with resume=true: the run to continue, its checkpoint checked
      3. start Ray, read the rows (`distributed.code_data`), plan the job (`train_plan`);
                           only then a fresh run folder (`runs.py`)
      4. tracked           the MLflow run and run.json end FINISHED, FAILED or KILLED
      5. build_trainer     the TorchTrainer a Tune trial also calls; fit
      6. finish            samples, artifacts, summary; publish best.pt to the seed's path

Workers run `distributed.train_worker.train_worker`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from contextlib import contextmanager

import numpy as np
import torch

from .. import runs, storage, tracking
from ..config import TrainJobConfig, to_dict
from ..core.checkpoint import load_checkpoint, load_model
from ..core.errors import DataError
from ..core.io import save_json, save_npy
from ..core.loop import GPTObjective, decide_precision
from ..core.model import GPT
from ..distributed.code_data import CodeFiles, HeldRows, build_rows, preflight, resolve_files
from ..errors import RunStateError, TrainingError
from ..startup import StartupClock
from ..train_plan import DataFacts, TrainPlan, plan_training, torch_threads
from .generate import tuned_sampler_settings


def check_data(job: TrainJobConfig) -> tuple[CodeFiles, DataFacts]:
    """The code files (local copies of those in a bucket), each checked; the facts name the
    codebook by its public path, which a later stage on any machine can read."""
    data = local_data(job.data)
    files = resolve_files(data)
    facts = preflight(data, files)
    if job.data.codebook:
        public = job.data.codebook
    elif files.codebook and job.data.codebook_dir:
        public = storage.join(job.data.codebook_dir, "codebook.pt")
    else:
        public = None
    if public and storage.is_uri(public):  # (a local path stays the one preflight resolved)
        facts = dataclasses.replace(facts, codebook_pt=public)
    return files, codebook_identity(files, facts)


def codebook_identity(files: CodeFiles, facts: DataFacts) -> DataFacts:
    """The facts with the SHA-256 of the codebook and of the VAE it names (where that exists):
    the checkpoints record both, and `generate` compares them with what it is given."""
    from ..core.codebook import codebook_vae_path, load_codebook_file

    if not files.codebook:
        return facts
    vae = codebook_vae_path(files.codebook, load_codebook_file(files.codebook))
    return dataclasses.replace(facts, codebook_sha256=storage.sha256(files.codebook),
                               vae_sha256=storage.sha256(vae) if vae and storage.isfile(vae) else None)


def local_data(data):
    """The data section with every URI replaced by a local copy (`storage.fetch`)."""
    changes = {}
    for key in ("codes", "labels", "val_codes", "val_labels", "codebook"):
        value = getattr(data, key)
        if value and storage.is_uri(value):
            changes[key] = storage.fetch(value)
    if data.codebook_dir and storage.is_uri(data.codebook_dir):
        if not storage.isfile(storage.join(data.codebook_dir, "codebook.pt")):  # uploaded last by the tokenizer
            raise DataError(f"{data.codebook_dir}: no codebook.pt, so not a finished tokenizer output "
                            "(run arplatform.tokenize first)")
        changes["codebook_dir"] = storage.fetch_folder(data.codebook_dir)
    return dataclasses.replace(data, **changes) if changes else data


def latest_ray_checkpoint(run: runs.Run):
    """The latest checkpoint Ray registered for `run`; a run without one never started."""
    from ray.train import Result

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # its "A run snapshot was found…" notice
    try:
        result = Result.from_path(run.ray_path)
    except Exception as e:  # noqa: BLE001 - any failure here means there is nothing to resume
        raise RunStateError(f"{run.ray_path}: run {run.name!r} has no Ray run state to resume from "
                            f"({type(e).__name__}); it never started training") from e
    if result.checkpoint is None:
        raise RunStateError(f"{run.ray_path}: run {run.name!r} registered no checkpoint; nothing to resume from")
    return result.checkpoint


def copy_checkpoint_files(checkpoint, folder: str) -> list[str]:
    """best.pt and last.pt of a Ray checkpoint into `folder`: the driver's copy, read from the run's
    storage (downloaded from a bucket), never from the disk of the node rank 0 ran on. last.pt
    goes last: a copy cut short by a kill has no last.pt."""
    from ..core.io import atomic_write

    copied = []
    if checkpoint is None:
        return copied
    with checkpoint.as_directory() as d:
        for name in ("best.pt", "last.pt"):
            src = os.path.join(d, name)
            if os.path.exists(src):
                copied.append(atomic_write(os.path.join(folder, name), lambda tmp, src=src: shutil.copyfile(src, tmp)))
    return copied


def resume_target(job: TrainJobConfig, facts: DataFacts) -> runs.Run | None:
    """With resume=true, the run to continue, its checkpoint checked; nothing is written."""
    if not job.resume:
        return None
    run = runs.find_run(job.output_root, job.name, job.run_name)
    # refuse a broken checkpoint here, not after Ray has retried it max_failures times
    with latest_ray_checkpoint(run).as_directory() as d:
        load_checkpoint(os.path.join(d, "last.pt"), expected_layout=facts.layout)
    return run


@contextmanager
def tracked(job: TrainJobConfig, run: runs.Run, params: dict, config_name: str | None, tags: dict | None = None):
    """The run's MLflow run (new, or the resumed run's) and run.json status, ended FINISHED,
    FAILED (an error) or KILLED (Ctrl-C, SIGTERM) whatever step stops the job.
    `tags` go on a new MLflow run (a sweep's trial: its parent run and trial id)."""
    uri = tracking.tracking_uri(job.tracking.tracking_uri, job.output_root) if job.tracking.enabled else None
    previous = runs.read_state(run).get("mlflow_run_id") if run.resumed else None

    def start() -> str:
        return tracking.start_run(uri, job.tracking.experiment, job.output_root, run.name, params,
                                  {"config_name": config_name or job.name, "ray_run": run.name, "run_dir": run.dir,
                                   **(tags or {})})

    def on_start(run_id):
        runs.write_state(run, status=runs.RUNNING, mlflow_run_id=run_id, tracking_uri=uri, config_name=config_name,
                         ray_storage=run.ray_storage)
        runs.push_run(run, job.output_root)  # a driver SIGKILLed later can be resumed from another machine

    def on_end(status: str):
        runs.write_state(run, status=status)
        runs.push_run(run, job.output_root)

    with tracking.tracked_run(uri, previous, start, on_start, on_end) as mlflow_run_id:
        yield uri, mlflow_run_id


def worker_config(job: TrainJobConfig, facts: DataFacts, uri: str | None, mlflow_run_id: str | None,
                  held_rows: dict) -> dict:
    """What every worker receives: plain data only (no paths: checkpoints leave through Ray), and
    the object refs of the rows held in the object store."""
    return {"job": to_dict(job), "facts": facts.to_dict(), "tracking_uri": uri, "mlflow_run_id": mlflow_run_id,
            "held_rows": held_rows}


def build_trainer(job: TrainJobConfig, facts: DataFacts, rows: dict, run: runs.Run, uri: str | None = None,
                  mlflow_run_id: str | None = None, callbacks: list | None = None):
    """The TorchTrainer of one training run: the job's config, the checked data facts and the
    train and val rows (`code_data.build_rows`) in; workers plan their own model, windows and
    steps from the config."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..distributed.train_worker import train_worker

    plan_training(job, facts, job.trainer.num_workers)  # refuse a job with no full step before any worker
    held = {name: r.to_dict() for name, r in rows.items() if isinstance(r, HeldRows)}
    streamed = {name: r for name, r in rows.items() if not isinstance(r, HeldRows)}
    t = job.trainer
    return TorchTrainer(
        train_worker,
        train_loop_config=worker_config(job, facts, uri, mlflow_run_id, held),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker},
                                     placement_strategy=t.placement_strategy),
        run_config=RunConfig(name=run.name, storage_path=run.ray_storage, callbacks=callbacks,
                             # bounded: Train V2 otherwise retries a worker group that cannot start forever
                             failure_config=FailureConfig(max_failures=t.max_failures,
                                                          controller_failure_limit=t.worker_start_attempts),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
                             logging_config=LoggingConfig(log_level="WARNING")),
        datasets=streamed or None,
    )


def resolve_train_precision(job: TrainJobConfig, facts: DataFacts, plan: TrainPlan, log) -> TrainJobConfig:
    """CPU jobs: decide `precision: auto` once, here, by timing the job's own model in both
    precisions at the workers' thread count, so every worker trains in the same precision.
    GPU jobs keep `auto`: each worker picks bf16 where its GPU supports it."""
    if job.optim.precision != "auto" or job.trainer.use_gpu:
        return job
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads(job, job.trainer.num_workers))  # as on a node running every worker
    try:
        precision = decide_precision("auto", GPT(plan.model), GPTObjective(facts.layout), "cpu", log)
    finally:
        torch.set_num_threads(previous)
    return dataclasses.replace(job, optim=dataclasses.replace(job.optim, precision=precision))


def describe(job: TrainJobConfig, facts: DataFacts, plan: TrainPlan) -> str:
    global_batch = job.optim.batch_size * job.trainer.num_workers * job.optim.grad_accum_steps
    return (f"data: {facts.num_train} train / {facts.num_val} val sequences, {plan.windows} window(s) of "
            f"{plan.seq_len} tokens each, layout {facts.layout}; batch {job.optim.batch_size} per worker × "
            f"{job.trainer.num_workers} workers × {job.optim.grad_accum_steps} accumulation = {global_batch} "
            f"global, {plan.steps_per_epoch} steps/epoch")


def run_train(job: TrainJobConfig, config_name: str | None = None, log=print) -> dict:
    from ..distributed.cluster import check_cpu_budget, init_ray

    t0, clock = time.perf_counter(), StartupClock()
    files, facts = check_data(job)
    if job.tracking.enabled:
        tracking.tracking_uri(job.tracking.tracking_uri, job.output_root)  # a URI root needs a named store
    storage.check_writable(job.output_root, "output_root")
    run = resume_target(job, facts)
    clock.mark("imports and checks")
    ray = init_ray(job.trainer.num_cpus)
    check_cpu_budget(ray, job.trainer.num_workers, job.trainer.cpus_per_worker, job.trainer.use_gpu)
    clock.mark("Ray")
    train_rows, val_rows, facts = build_rows(files, facts, job.data, job.optim.seed)
    clock.mark("rows")
    plan = plan_training(job, facts, job.trainer.num_workers)
    job = resolve_train_precision(job, facts, plan, log)
    clock.mark("precision")
    # every check has passed: only now does the run get a folder (a fresh one, or the resumed one)
    run = run or runs.new_run(job.output_root, job.name, job.run_name)
    runs.write_state(run, **facts.identity())  # a tokenizer version a run names is never pruned
    public = storage.Mirror(job.output_root).uri  # a path's name under the root: the bucket's, for a URI root
    log(f"run {run.name}{' (resumed)' if run.resumed else ''}: {public(run.dir)}")
    log(describe(job, facts, plan))
    params = {**to_dict(job), "layout": facts.layout.to_dict(), "model_resolved": plan.model.to_dict(),
              "batch": {"per_worker": job.optim.batch_size,
                        "global": job.optim.batch_size * job.trainer.num_workers * job.optim.grad_accum_steps},
              "data_examples": {"train": facts.num_train, "val": facts.num_val}}
    with tracked(job, run, params, config_name) as (uri, mlflow_run_id):
        clock.mark("run folder and MLflow run")
        trainer = build_trainer(job, facts, {"train": train_rows, "val": val_rows}, run, uri, mlflow_run_id)
        result = trainer.fit()
        if (result.return_value or {}).get("error"):
            raise TrainingError(result.return_value["error"])
        summary = finish(job, run, facts.codebook_pt, result, uri, mlflow_run_id, config_name)
        summary["startup"] = clock.report(summary.pop("startup_times", None))
        log(StartupClock.line(summary["startup"]))
        summary["seconds"] = time.perf_counter() - t0
        save_json(summary, os.path.join(run.dir, "summary.json"))
    runs.push_run(run, job.output_root, published=True)  # (the run folder went when the run ended)
    log(f"done in {summary['seconds']:.0f} s: best val {summary['final'].get('best_val_loss', float('nan')):.4f} "
        f"nats/token\n  run:         {public(run.dir)}\n  checkpoint:  {public(summary['published'])} (published)"
        f"\n  samples:     {public(run.dir)}/samples_*\n  Ray run:     {run.ray_path}")
    if uri:
        log(f"  MLflow run:  {mlflow_run_id} in {uri}\n  look at it:  mlflow ui --backend-store-uri {uri} "
            "--host 127.0.0.1")
    return summary


def finish(job: TrainJobConfig, run: runs.Run, codebook: str | None, result, uri: str | None,
           mlflow_run_id: str | None, config_name: str | None) -> dict:
    """After fit: the checkpoints from Ray's storage, samples and artifacts in the run folder,
    then best.pt published to the seed's path."""
    copy_checkpoint_files(result.checkpoint, run.checkpoint_dir)
    best = os.path.join(run.checkpoint_dir, "best.pt")
    artifacts = [best, save_json(to_dict(job) | {"config_name": config_name}, os.path.join(run.dir, "config.json"))]
    # a sampler sweep's sampler.json beside the seed's path, in the bucket for a URI root
    tuned = tuned_sampler_settings(runs.seed_checkpoint(job.output_root, job.name), sampled=best)
    artifacts += sample_grid(job, best, codebook, run.dir, tuned)
    if uri:
        for path in artifacts:
            tracking.log_artifact(uri, mlflow_run_id, path)
    summary = dict(result.return_value or {})
    summary.update({"run_name": run.name, "run_dir": run.dir, "mlflow_run_id": mlflow_run_id, "tracking_uri": uri,
                    "output_dir": run.dir, "ray_run_path": result.path,
                    "published": runs.publish_best(run, job.output_root)})
    return summary


def sample_grid(job: TrainJobConfig, best_path: str, codebook: str | None, out: str,
                tuned: dict | None = None) -> list[str]:
    """Sample codes from best.pt; decode them to a PNG grid when the codebook names its VAE."""
    from ..core.codebook import codebook_vae_path, load_codebook_file
    from ..core.sampling import codes_from_sequences, generate_autoregressive, sampling_precision
    model, layout, ckpt = load_model(best_path)
    s = job.sample
    n = s.num_samples
    if n == 0:
        return []
    if tuned:  # a sampler sweep tuned this config's published checkpoint
        print(f"sampling with this config's sampler.json: {tuned}", flush=True)
        s = dataclasses.replace(s, **tuned)
    choice = sampling_precision(model, layout, s.precision)
    if s.precision == "auto":
        print(f"sampling precision auto → {choice.precision}: {choice.reason}", flush=True)
    labels = torch.arange(n) % layout.num_classes if layout.conditional else None
    seqs = generate_autoregressive(model, layout, int(np.prod(ckpt["grid_shape"])), num_samples=n,
                                   class_labels=labels, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                   cfg_scale=s.cfg_scale, generator=torch.Generator().manual_seed(job.optim.seed),
                                   precision=choice.precision)
    codes = codes_from_sequences(seqs, layout).numpy().astype(np.int32)
    written = [save_npy(codes, os.path.join(out, "samples_codes.npy"))]
    codebook_dict = load_codebook_file(storage.fetch(codebook)) if codebook else None  # read once: VAE and vectors
    vae_path = codebook_vae_path(codebook, codebook_dict) if codebook else None
    if vae_path and storage.isfile(vae_path):
        vae_path = storage.fetch(vae_path)
        from ..core.decode import decode_codes_to_images
        from ..images import make_grid, save_png

        images = decode_codes_to_images(codes, codebook_dict, vae_path)
        order = np.argsort(labels.numpy(), kind="stable") if labels is not None else np.arange(n)
        columns = max(1, n // max(1, layout.num_classes)) if labels is not None else 8
        written.append(save_png(make_grid(images.numpy()[order], columns=columns),
                                os.path.join(out, "samples_grid.png")))
    return written
