"""One training job on Ray Train, as the training stage, a sweep and each of its trials run it:
the data checked on the driver (`check_data`), the run tracked in MLflow and run.json
(`tracked`), the `TorchTrainer` (`build_trainer`), the precision decided once
(`resolve_train_precision`) and the checkpoints copied back from Ray's storage."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from contextlib import contextmanager

import torch

from ..config import TrainJobConfig, to_dict
from ..config.train_plan import DataFacts, TrainPlan, plan_training, torch_threads
from ..core.errors import DataError, RunStateError
from ..core.loop import GPTObjective, decide_precision
from ..core.model import GPT
from ..distributed.code_data import CodeFiles, HeldRows, preflight, resolve_files
from ..outputs import runs, storage
from ..tracking import mlflow_runs


def check_data(job: TrainJobConfig) -> tuple[CodeFiles, DataFacts]:
    """The code files (local copies of those in a bucket), each checked; the facts name the
    codebook by its public path, which a later stage on any machine can read."""
    data = local_data(job.data)
    files = resolve_files(data)
    facts = preflight(data, files)
    if job.data.codebook:
        public = storage.Location(job.data.codebook)
    elif files.codebook and job.data.codebook_dir:
        public = storage.Location(job.data.codebook_dir) / "codebook.pt"
    else:
        public = None
    if public and public.remote:  # (a local path stays the one preflight resolved)
        facts = dataclasses.replace(facts, codebook_pt=bucket_version(public))
    return files, codebook_identity(files, facts)


def bucket_version(codebook_pt: storage.Location) -> str:
    """A bucket's codebook.pt by its version's own copy (`version.json`), never overwritten."""
    from ..outputs.publish import VERSION_FILE

    folder = codebook_pt.parent  # <root>/codebook/<name>
    if not folder.exists(VERSION_FILE):
        return codebook_pt.path
    version = folder.read_json_object(VERSION_FILE, DataError).get("version")
    return folder.file(f"../../{version}/codebook/codebook.pt") if isinstance(version, str) else codebook_pt.path


def codebook_identity(files: CodeFiles, facts: DataFacts) -> DataFacts:
    """The facts with the SHA-256 of the codebook and of the VAE it names (where that exists):
    the checkpoints record both, and `generate` compares them with what it is given."""
    from ..core.codebook import load_codebook_file
    from ..outputs.publish import codebook_vae_path

    if not files.codebook:
        return facts
    vae = codebook_vae_path(files.codebook, load_codebook_file(files.codebook))
    vae = storage.Location(vae) if vae else None
    return dataclasses.replace(facts, codebook_sha256=storage.Location(files.codebook).sha256(),
                               vae_sha256=vae.sha256() if vae and vae.isfile() else None)


def local_data(data):
    """The data section with every URI replaced by a local copy (`Location.fetch`)."""
    changes = {}
    for key in ("codes", "labels", "val_codes", "val_labels", "codebook"):
        value = getattr(data, key)
        if value and storage.Location(value).remote:
            changes[key] = storage.Location(value).fetch()
    folder = storage.Location(data.codebook_dir) if data.codebook_dir else None
    if folder and folder.remote:
        if not folder.isfile("codebook.pt"):  # uploaded last by the tokenizer
            raise DataError(f"{data.codebook_dir}: no codebook.pt, so not a finished tokenizer output "
                            "(run arplatform tokenize first)")
        changes["codebook_dir"] = folder.fetch_folder()
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
    return own_copy(run, result.checkpoint)


def own_copy(run: runs.Run, checkpoint):
    """The registered checkpoint in this run's own folder: Ray records absolute paths, so in a
    copied or moved output root they still name the original's files. Checked are the bytes here."""
    from ray.train import Checkpoint

    if storage.Location(run.ray_path).remote:
        return checkpoint
    here = os.path.join(run.ray_path, os.path.basename(checkpoint.path.rstrip("/")))
    return Checkpoint(here) if os.path.isdir(here) and here != checkpoint.path else checkpoint


def copy_checkpoint_files(checkpoint, folder: str) -> list[str]:
    """best.pt, then last.pt (a copy cut short has none), of a Ray checkpoint into `folder`, from
    the run's storage, never from rank 0's node."""
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


@contextmanager
def tracked(job: TrainJobConfig, run: runs.Run, root: storage.Root, params: dict, config_name: str | None,
            tags: dict | None = None, ends_itself: bool = True, dataset: dict | None = None):
    """The run's MLflow run (new or resumed) and run.json status, ended FINISHED, FAILED or KILLED
    whatever stops the job; `tags` and `dataset` go on a new run. A trial passes
    `ends_itself=False`: its driver ends the runs from Tune's verdict."""
    uri = mlflow_runs.tracking_uri(job.tracking.tracking_uri, job.output_root) if job.tracking.enabled else None
    previous = runs.read_state(run).get("mlflow_run_id") if run.resumed else None

    def start() -> str:
        data = dict(dataset or {})
        version = data.pop("tokenizer_version", None)
        run_id = mlflow_runs.start_run(uri, job.tracking.experiment, root.local_path("mlartifacts"), run.name, params,
                                    {"config_name": config_name or job.name, "ray_run": run.name,
                                     "run_dir": root.shared_name(run.dir), **(tags or {}),
                                     **({"tokenizer_version": version} if version else {})})
        if data:
            mlflow_runs.log_dataset(uri, run_id, **data)
        return run_id

    def on_start(run_id):
        runs.write_state(run, status=runs.RUNNING, mlflow_run_id=run_id, tracking_uri=uri, config_name=config_name,
                         ray_storage=run.ray_storage)
        runs.push_run(run, root)  # a driver SIGKILLed later can be resumed from another machine

    def on_end(status: str):
        runs.write_state(run, status=status)
        runs.push_run(run, root)

    with mlflow_runs.tracked_run(uri, previous, start, on_start, on_end, ends_itself) as mlflow_run_id:
        yield uri, mlflow_run_id


def training_dataset(files: CodeFiles, facts: DataFacts, root: storage.Root) -> dict:
    """The training codes as an MLflow dataset: named by their tokenizer version, digest the
    SHA-256 of every code and label file and the codebook, source their folder."""
    import hashlib

    paths = [*files.codes, *(files.labels or []), *(files.val_codes or []), *(files.val_labels or [])]
    h = hashlib.sha256()
    for path in paths:
        h.update(f"{os.path.basename(path)} {storage.Location(path).sha256()} ".encode())
    h.update(str(facts.codebook_sha256).encode())
    version = tokenizer_version(facts.codebook_pt)
    folder = os.path.dirname(files.codes[0]) if len(files.codes) > 1 or not facts.codebook_pt else \
        storage.Location(facts.codebook_pt).parent.path
    name = f"codes of tokenizer {version}" if version else f"codes {os.path.basename(folder.rstrip('/'))}"
    return {"name": name, "digest": h.hexdigest()[:32], "source": root.shared_name(folder),
            "profile": {"train_sequences": facts.num_train, "val_sequences": facts.num_val, "files": len(paths)},
            "tokenizer_version": version}


def tokenizer_version(codebook_pt: str | None) -> str | None:
    """`<name>/<version>` of a codebook inside a tokenizer version (`<root>/tokenizers/<name>/
    <version>/codebook/codebook.pt`), else None (codes made outside the tokenizer)."""
    if not codebook_pt:
        return None
    parts = storage.Location(codebook_pt).real().split("/")
    if len(parts) >= 5 and parts[-5] == "tokenizers" and parts[-2] == "codebook":
        return f"{parts[-4]}/{parts[-3]}"
    return None


def worker_config(job: TrainJobConfig, facts: DataFacts, uri: str | None, mlflow_run_id: str | None,
                  held_rows: dict) -> dict:
    """What every worker receives: plain data only (no paths: checkpoints leave through Ray), and
    the object refs of the rows held in the object store."""
    return {"job": to_dict(job), "facts": facts.to_dict(), "tracking_uri": uri, "mlflow_run_id": mlflow_run_id,
            "held_rows": held_rows}


def build_trainer(job: TrainJobConfig, facts: DataFacts, rows: dict, run: runs.Run, uri: str | None = None,
                  mlflow_run_id: str | None = None, callbacks: list | None = None):
    """The TorchTrainer of one run: config, checked data facts and rows in; workers plan the rest."""
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
    """CPU jobs decide `precision: auto` once, here, at the workers' thread count, so every worker
    trains alike; GPU jobs keep `auto` (bf16 where the GPU supports it)."""
    if job.optim.precision != "auto" or job.trainer.use_gpu:
        return job
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads(job, job.trainer.num_workers))  # as on a node running every worker
    try:
        precision = decide_precision("auto", GPT(plan.model), GPTObjective(facts.layout), "cpu", log)
    finally:
        torch.set_num_threads(previous)
    return dataclasses.replace(job, optim=dataclasses.replace(job.optim, precision=precision))

