"""The training stage: the core loop data-parallel on Ray Train's TorchTrainer.

    run_train(job)
      1. check_data        resolve the code files and check every one, before Ray starts
                           (the pieces a sweep's trials share live in `jobs.training`)
      2. resume_target     with resume=true: the run to continue, its checkpoint checked
      3. start Ray, read the rows (`distributed.code_data`), plan the job (`train_plan`);
                           only then a fresh run folder (`runs.py`)
      4. tracked           the MLflow run and run.json end FINISHED, FAILED or KILLED
      5. build_trainer     the TorchTrainer (a Tune trial builds the same one); fit
      6. finish            samples, artifacts, summary; publish best.pt to the seed's path

Workers run `distributed.train_worker.train_worker`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import ExitStack

import numpy as np
import torch

from .. import runs, storage, tracking
from ..config import TrainJobConfig, to_dict
from ..core.checkpoint import load_checkpoint, load_model
from ..core.io import save_json, save_npy
from ..distributed.code_data import build_rows
from ..errors import ConfigError, TrainingError
from ..jobs.sampling import read_sampler_file, tuned_sampler_settings
from ..jobs.training import (
    build_trainer,
    check_data,
    copy_checkpoint_files,
    latest_ray_checkpoint,
    resolve_train_precision,
    tracked,
    training_dataset,
)
from ..startup import StartupClock
from ..train_plan import DataFacts, TrainPlan, plan_training


def resume_target(run: runs.Run | None, facts: DataFacts, job: TrainJobConfig) -> runs.Run | None:
    """With resume=true, the run to continue (found first of all: `runs.find_run`), its
    checkpoint checked against the data and the settings; nothing is written, so a refused
    resume leaves the run as it was (a FINISHED run stays FINISHED)."""
    if run is None:
        return None
    # refuse a broken checkpoint here, not after Ray has retried it max_failures times
    with latest_ray_checkpoint(run).as_directory() as d:
        ckpt = load_checkpoint(os.path.join(d, "last.pt"), expected_layout=facts.layout)
    changed = changed_settings(ckpt.get("train_config") or {}, to_dict(job))
    if changed:
        raise ConfigError(f"resume=true: run {run.name!r} started with other settings ({'; '.join(changed[:3])}); "
                          "a resumed run keeps the settings it started with: put them back, or start a new run")
    return run


PATH_KEYS = ("codes", "labels", "val_codes", "val_labels", "codebook", "codebook_dir")  # checked by identity


def changed_settings(saved: dict, job: dict) -> list[str]:
    """`section.key: old → new` for every model, optim and data setting a resume would change
    (what makes the trajectory). A key the saved run predates is left out; so is a precision
    asked as `auto` (the run's resolved one is kept) and a data path (its identity is checked)."""
    changed = []
    for section in ("model", "optim", "data"):
        old, new = saved.get(section) or {}, job.get(section) or {}
        for key in sorted(old):
            if key not in new or (section == "data" and key in PATH_KEYS):
                continue
            if section == "optim" and key == "precision" and new[key] == "auto":
                continue
            if old[key] != new[key]:
                changed.append(f"{section}.{key}: {old[key]!r} → {new[key]!r}")
    return changed


def model_size(job: TrainJobConfig, plan: TrainPlan) -> dict:
    from ..core.model import parameter_count, training_flops_per_token

    return {"preset": job.model.preset or "small", "parameters": parameter_count(plan.model),
            "train_flops_per_token": training_flops_per_token(plan.model)}


def describe(job: TrainJobConfig, facts: DataFacts, plan: TrainPlan, size: dict) -> str:
    from ..report import human

    global_batch = job.optim.batch_size * job.trainer.num_workers * job.optim.grad_accum_steps
    m = plan.model
    return (f"model: {size['preset']} ({m.num_layers} layers × {m.embed_dim} wide, {m.num_heads} heads), "
            f"{human(size['parameters'] / 1e6)} M parameters, {human(size['train_flops_per_token'] / 1e6)} MFLOPs "
            f"per training token\n"
            f"data: {facts.num_train} train / {facts.num_val} val sequences, {plan.windows} window(s) of "
            f"{plan.seq_len} tokens each, layout {facts.layout}; batch {job.optim.batch_size} per worker × "
            f"{job.trainer.num_workers} workers × {job.optim.grad_accum_steps} accumulation = {global_batch} "
            f"global, {plan.steps_per_epoch} steps/epoch")


def run_train(job: TrainJobConfig, config_name: str | None = None, log=print) -> dict:
    t0, clock = time.perf_counter(), StartupClock()
    root = storage.Root(job.output_root)  # resolved once: what is further in takes it, or local paths
    resumed = runs.find_run(root, job.name, job.run_name) if job.resume else None  # no run: one line
    files, facts = check_data(job)
    if job.tracking.enabled:
        tracking.tracking_uri(job.tracking.tracking_uri, job.output_root)  # a URI root needs a named store
    root.check_writable("output_root")
    read_sampler_file(runs.seed_checkpoint(root, job.name))  # read after training: checked now
    run = resume_target(resumed, facts, job)
    with ExitStack() as holding:
        if run is not None:
            holding.enter_context(runs.held(run))  # before Ray starts: a run whose driver is alive is refused
        return train_run(job, config_name, root, run, files, facts, clock, t0, log, holding)


def train_run(job: TrainJobConfig, config_name: str | None, root: storage.Root, run: runs.Run | None, files,
              facts: DataFacts, clock: StartupClock, t0: float, log, holding: ExitStack) -> dict:
    """`run_train` once every check has passed and a resumed run is held: Ray, the rows, the
    plan, the run folder (held from its first moment), training, and what a finished run leaves."""
    from ..distributed.cluster import check_cpu_budget, init_ray

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
    if run is None:
        run = holding.enter_context(runs.held(runs.new_run(root, job.name, job.run_name)))
    runs.note_tokenizer(run, facts.identity())  # a tokenizer version a run names is never pruned
    log(f"run {run.name}{' (resumed)' if run.resumed else ''}: {root.public(run.dir)}")
    size = model_size(job, plan)
    log(describe(job, facts, plan, size))
    dataset = training_dataset(files, facts, root) if job.tracking.enabled else None
    with tracked(job, run, root, run_params(job, facts, plan, size), config_name,
                 dataset=dataset) as (uri, mlflow_run_id):
        clock.mark("run folder and MLflow run")
        trainer = build_trainer(job, facts, {"train": train_rows, "val": val_rows}, run, uri, mlflow_run_id)
        result = trainer.fit()
        if (result.return_value or {}).get("error"):
            raise TrainingError(result.return_value["error"])
        summary = finish(job, run, root, facts.codebook_pt, result, uri, mlflow_run_id, config_name)
        summary["model_size"] = size
        summary["startup"] = clock.report(summary.pop("startup_times", None))
        log(StartupClock.line(summary["startup"]))
        summary["seconds"] = time.perf_counter() - t0
        save_json(os.path.join(run.dir, "summary.json"), summary)
    runs.push_run(run, root, published=True)  # (the run folder went when the run ended)
    log(where_it_went(summary, run, root.public, uri, mlflow_run_id))
    return summary


def run_params(job: TrainJobConfig, facts: DataFacts, plan: TrainPlan, size: dict) -> dict:
    """What the MLflow run records as parameters: the job, and what its data and plan made of it."""
    global_batch = job.optim.batch_size * job.trainer.num_workers * job.optim.grad_accum_steps
    return {**to_dict(job), "layout": facts.layout.to_dict(), "model_resolved": plan.model.to_dict(),
            "model_size": size, "batch": {"per_worker": job.optim.batch_size, "global": global_batch},
            "data_examples": {"train": facts.num_train, "val": facts.num_val}}


def where_it_went(summary: dict, run: runs.Run, public, uri: str | None, mlflow_run_id: str | None) -> str:
    """The closing lines: the result, then where the run, checkpoint, samples and MLflow run are."""
    lines = [f"done in {summary['seconds']:.0f} s: best val {summary['final'].get('best_val_loss', float('nan')):.4f} "
             "nats/token", f"  run:         {public(run.dir)}",
             f"  checkpoint:  {public(summary['published'])} (published)",
             f"  samples:     {public(run.dir)}/samples_*", f"  Ray run:     {run.ray_path}"]
    if uri:
        lines += [f"  MLflow run:  {mlflow_run_id} in {uri}"]
        if not uri.startswith(("http://", "https://")):
            lines.append(f"  look at it:  mlflow server --backend-store-uri {uri} --host 127.0.0.1, then open")
        lines.append(f"               {tracking.run_page(uri, mlflow_run_id)}")
        model = summary.get("mlflow_model", {})
        if model.get("model_uri"):
            registered = f", MLflow registered: {model['registered_uri']}" if model.get("registered_uri") else ""
            lines.append(f"  MLflow model: {model['model_uri']} (also {model['run_uri']}){registered}  "
                         "(arplatform generate transformer_ckpt=<any of them> draws from it)")
    return "\n".join(lines)


def finish(job: TrainJobConfig, run: runs.Run, root: storage.Root, codebook: str | None, result, uri: str | None,
           mlflow_run_id: str | None, config_name: str | None) -> dict:
    """After fit: the checkpoints from Ray's storage, samples and artifacts in the run folder,
    then best.pt published to the seed's path."""
    copy_checkpoint_files(result.checkpoint, run.checkpoint_dir)
    best = os.path.join(run.checkpoint_dir, "best.pt")
    runs.write_state(run, best_sha256=storage.sha256(best))  # `evaluate samples` finds this run by it
    artifacts = [best, save_json(os.path.join(run.dir, "config.json"), to_dict(job) | {"config_name": config_name})]
    # a sampler sweep's sampler.json beside the seed's path, in the bucket for a URI root
    tuned = tuned_sampler_settings(runs.seed_checkpoint(root, job.name), sampled=best)
    artifacts += sample_grid(job, best, codebook, run.dir, tuned)
    if uri:
        for path in artifacts:
            tracking.log_artifact(uri, mlflow_run_id, path)
            if path.endswith("samples_grid.png"):  # compared across runs in the chart view's image grid
                tracking.log_image(uri, mlflow_run_id, path, "samples", summary_step(result))
    summary = dict(result.return_value or {})
    if uri and job.tracking.log_model and codebook:
        from ..jobs.mlflow_model import log_training_model  # (imports MLflow's model flavours: seconds)

        summary["mlflow_model"] = log_training_model(job, best, codebook, tuned, uri, mlflow_run_id)
    summary.update({"run_name": run.name, "run_dir": run.dir, "mlflow_run_id": mlflow_run_id, "tracking_uri": uri,
                    "output_dir": run.dir, "ray_run_path": result.path,
                    "published": runs.publish_best(run, root)})
    return summary


def summary_step(result) -> int:
    """The optimizer step training ended at (Ray's last report), 0 when it reported none."""
    return int((result.metrics or {}).get("step", 0))


def sample_grid(job: TrainJobConfig, best_path: str, codebook: str | None, out: str,
                tuned: dict | None = None) -> list[str]:
    """Sample codes from best.pt; decode them to a PNG grid when the codebook names its VAE."""
    from ..core.codebook import load_codebook_file
    from ..core.sampling import codes_from_sequences, generate_autoregressive, sampling_precision
    from ..publish import codebook_vae_path
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
    written = [save_npy(os.path.join(out, "samples_codes.npy"), codes)]
    codebook_dict = load_codebook_file(storage.fetch(codebook)) if codebook else None  # read once: VAE and vectors
    vae_path = codebook_vae_path(codebook, codebook_dict) if codebook else None
    if vae_path and storage.isfile(vae_path):
        vae_path = storage.fetch(vae_path)
        from ..core.decode import decode_codes_to_images
        from ..images import make_grid, save_png

        images = decode_codes_to_images(codes, codebook_dict, vae_path)
        order = np.argsort(labels.numpy(), kind="stable") if labels is not None else np.arange(n)
        columns = max(1, n // max(1, layout.num_classes)) if labels is not None else 8
        written.append(save_png(os.path.join(out, "samples_grid.png"),
                                make_grid(images.numpy()[order], columns=columns)))
    return written
