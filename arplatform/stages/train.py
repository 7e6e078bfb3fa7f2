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

import os
import time
from contextlib import ExitStack

import numpy as np

from ..config import TrainJobConfig, from_dict, to_dict
from ..config.train_plan import DataFacts, TrainPlan, plan_training
from ..core.checkpoint import load_checkpoint, load_model
from ..core.errors import ConfigError, TrainingError
from ..core.io import save_json, save_npy
from ..core.startup import StartupClock
from ..distributed.code_data import build_rows
from ..jobs.sampling import read_sampler_file
from ..jobs.training import (
    build_trainer,
    check_data,
    copy_checkpoint_files,
    latest_ray_checkpoint,
    resolve_train_precision,
    tracked,
    training_dataset,
)
from ..outputs import runs, storage
from ..tracking import mlflow_runs


def resume_target(run: runs.Run | None, facts: DataFacts, job: TrainJobConfig) -> runs.Run | None:
    """With resume=true, the run to continue, its checkpoint checked; nothing written (a refused
    resume leaves the run as it was)."""
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
    """`section.key: old → new` for each trajectory setting a resume would change (not keys the run
    predates, an `auto` precision, or data paths)."""
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
    from ..tracking.report import human

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
        mlflow_runs.tracking_uri(job.tracking.tracking_uri, job.output_root)  # a URI root needs a named store
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
        lines.append(f"               {mlflow_runs.run_page(uri, mlflow_run_id)}")
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
    runs.write_state(run, best_sha256=storage.Location(best).sha256())  # `evaluate samples` finds this run by it
    artifacts = [best, save_json(os.path.join(run.dir, "config.json"), to_dict(job) | {"config_name": config_name})]
    artifacts += sample_grid(job, best, codebook, run.dir)
    if uri:
        for path in artifacts:
            mlflow_runs.log_artifact(uri, mlflow_run_id, path)
            if path.endswith("samples_grid.png"):  # compared across runs in the chart view's image grid
                mlflow_runs.log_image(uri, mlflow_run_id, path, "samples", summary_step(result))
    summary = dict(result.return_value or {})
    if uri and job.tracking.log_model and codebook:
        from ..jobs.mlflow_model import log_training_model  # (imports MLflow's model flavours: seconds)

        summary["mlflow_model"] = log_training_model(job, best, codebook, uri, mlflow_run_id)
    summary.update({"run_name": run.name, "run_dir": run.dir, "mlflow_run_id": mlflow_run_id, "tracking_uri": uri,
                    "output_dir": run.dir, "ray_run_path": result.path,
                    "published": runs.publish_best(run, root)})
    return summary


def summary_step(result) -> int:
    """The optimizer step training ended at (Ray's last report), 0 when it reported none."""
    return int((result.metrics or {}).get("step", 0))


def sample_grid(job: TrainJobConfig, best_path: str, codebook: str | None, out: str) -> list[str]:
    """best.pt's samples drawn by `run_generate` (seed `optim.seed`) into `<run>/samples/`, so
    `arplatform generate` redraws them image for image; no VAE: the codes, by the same sampler."""
    import shutil

    from ..config import GenerateConfig
    from ..jobs.generation import run_generate
    from ..outputs.publish import codebook_vae_path

    n = job.sample.num_samples
    if n == 0:
        return []
    codes_path = os.path.join(out, "samples_codes.npy")
    vae = codebook_vae_path(codebook) if codebook else None
    if not (vae and storage.Location(vae).isfile()):
        return [save_npy(codes_path, codes_only(job, best_path))]
    folder = os.path.join(out, "samples")
    run_generate(from_dict(GenerateConfig, {"transformer_ckpt": best_path, "codebook_pt": codebook, "num_samples": n,
                                            "seed": job.optim.seed, "out": folder, "format": "npz"}))
    with np.load(os.path.join(folder, "samples.npz"), allow_pickle=False) as z:
        codes = z["codes"]
    grid = shutil.copyfile(os.path.join(folder, "grid.png"), os.path.join(out, "samples_grid.png"))
    return [save_npy(codes_path, codes.astype(np.int32)), grid]


def codes_only(job: TrainJobConfig, best_path: str) -> np.ndarray:
    """Samples 0…n-1 of seed `optim.seed` (balanced classes) as codes: what `generate` would draw."""
    from ..core.sampling import sampling_precision
    from ..distributed.image_sampler import draw_codes
    from ..jobs.sampling import checkpoint_sampling

    model, layout, ckpt = load_model(best_path)
    sample = checkpoint_sampling(best_path)
    n = job.sample.num_samples
    labels = np.arange(n) % layout.num_classes if layout.conditional else np.full(n, -1)
    precision = sampling_precision(model, layout, sample["precision"]).precision
    return draw_codes(model, layout, int(np.prod(ckpt["grid_shape"])), np.arange(n), labels, job.optim.seed, sample,
                      precision).astype(np.int32)
