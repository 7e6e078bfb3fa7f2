"""The sweep stage: Ray Tune over the training job, every trial a Ray Train run.

    run_tune(cfg)
      1. check        the data, then every value of the space as a whole training job; the
                      search algorithm; with resume=true, the sweep to continue. Before Ray.
      2. budget       start Ray; refuse concurrent trials whose workers cannot all get CPUs/GPUs
      3. base job     rows read once on the driver; paths made absolute, threads shared out,
                      precision decided once: what every trial starts from
      4. tracked      the sweep folder and its MLflow parent run, ended FINISHED/FAILED/KILLED
      5. fit          Tuner(tune_trial, ASHA on epochs_done) — or Tuner.restore on resume
      6. finish       trial statuses (ASHA-stopped → KILLED), leaderboard, best.yaml

Trials run `jobs.tune_trial.tune_trial`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import contextmanager

from ..config import TrainJobConfig, TuneJobConfig, flatten, to_dict
from ..config.train_plan import DataFacts, plan_training
from ..config.tune_space import Axis, apply_params, check_space, check_trial_count, parse_space, tune_domains
from ..core.errors import ConfigError, Interrupted, RunStateError
from ..core.io import read_json_object
from ..jobs.training import check_data, resolve_train_precision, training_dataset
from ..outputs import runs, storage, sweeps
from ..tracking import mlflow_runs, sweep_pictures


def check_search(cfg: TuneJobConfig, axes: list[Axis]) -> None:
    if cfg.search.algorithm != "optuna":
        return
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("search.algorithm: optuna needs the optuna package (pip install optuna); "
                          "or use search.algorithm=random") from None
    grids = [a.key for a in axes if a.kind == "grid"]
    if grids:
        raise ConfigError(f"space.{grids[0]}: optuna samples every axis; use choice instead of grid, "
                          "or search.algorithm=random")


def max_epochs(cfg: TuneJobConfig) -> int:
    return cfg.asha.max_epochs or cfg.train.optim.epochs


def base_job(cfg: TuneJobConfig, facts: DataFacts, uri: str | None, log) -> TrainJobConfig:
    """The job every trial starts from: absolute paths (trials run in Ray's working dirs),
    the cores shared between concurrent workers, the MLflow URI and precision decided here."""
    job = cfg.train
    data = dataclasses.replace(job.data, **{k: os.path.abspath(v) for k, v in dataclasses.asdict(job.data).items()
                                            if k in ("codebook_dir", "codes", "labels", "val_codes", "val_labels",
                                                     "codebook") and v})
    trainer = job.trainer
    if not trainer.use_gpu and not trainer.threads_per_worker:
        workers = cfg.search.max_concurrent_trials * trainer.num_workers
        trainer = dataclasses.replace(trainer, threads_per_worker=max(1, (os.cpu_count() or 1) // workers))
    tracking_cfg = dataclasses.replace(job.tracking, tracking_uri=uri) if uri else job.tracking
    job = dataclasses.replace(job, output_root=os.path.abspath(job.output_root), data=data, trainer=trainer,
                              tracking=tracking_cfg, optim=dataclasses.replace(job.optim, epochs=max_epochs(cfg)),
                              sample=dataclasses.replace(job.sample, num_samples=0))
    return resolve_train_precision(job, facts, plan_training(job, facts, trainer.num_workers), log)


@contextmanager
def tracked_sweep(cfg: TuneJobConfig, sweep: sweeps.Sweep, uri: str | None, config_name: str):
    """The sweep's MLflow parent run (new, or the resumed sweep's) and sweep.json status."""
    previous = sweeps.read_state(sweep).get("mlflow_parent_run_id") if sweep.resumed else None
    params = {"space": flatten(cfg.space), "search": to_dict(cfg.search), "asha": to_dict(cfg.asha),
              "trial_cpus": cfg.trial_cpus, "train_config": cfg.train_config,
              "train_overrides": " ".join(cfg.train_overrides)}

    def start() -> str:
        artifacts = os.path.join(cfg.train.output_root, "mlartifacts")  # (a sweep's root is local)
        return mlflow_runs.start_run(uri, cfg.train.tracking.experiment, artifacts, sweep.name, params,
                                  {"config_name": config_name, "sweep_dir": sweep.dir, "kind": "sweep"})

    def on_start(run_id):
        sweeps.write_state(sweep, status=runs.RUNNING, mlflow_parent_run_id=run_id, tracking_uri=uri,
                           tune_path=sweep.tune_path)

    def on_end(status: str):
        sweeps.write_state(sweep, status=status)

    with mlflow_runs.tracked_run(uri, previous, start, on_start, on_end) as parent:
        yield parent


def trial_dirname(trial) -> str:
    return trial.trial_id  # the leaderboard finds each trial's run folder by it


def outcome_recorder(sweep: sweeps.Sweep):
    """A Tune callback (driver side) that writes each trial's end into its run.json,
    so a resumed sweep still knows how the trials of an earlier driver ended."""
    from ray import tune

    class RecordOutcome(tune.Callback):
        def _record(self, trial, outcome: str):
            run = sweeps.Sweep(**sweep_dict).trial_run(trial.trial_id)
            if outcome == "complete":
                trial_checkpoints(run)  # before the mark: a completed trial's folder holds its checkpoints
            runs.write_state(run, tune_outcome=outcome)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._record(trial, "complete")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._record(trial, "error")

    sweep_dict = sweep.to_dict()
    return RecordOutcome()


def build_tuner(cfg: TuneJobConfig, axes: list[Axis], job: TrainJobConfig, facts: DataFacts, rows: dict,
                sweep: sweeps.Sweep, parent: str | None, config_name: str, dataset: dict | None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from ..jobs.tune_trial import tune_trial

    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base_job=to_dict(job), facts=facts.to_dict(), rows=rows,
                             sweep=sweep.to_dict(), parent_run_id=parent, config_name=config_name, dataset=dataset),
        {"CPU": cfg.trial_cpus})
    if sweep.resumed:
        if not tune.Tuner.can_restore(sweep.tune_path):
            raise RunStateError(f"{sweep.tune_path}: sweep {sweep.name!r} has no Tune state to resume from")
        return tune.Tuner.restore(sweep.tune_path, trainable=trainable, resume_errored=True)
    s = cfg.search
    if s.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=s.seed)
    else:
        # an instance takes its own concurrency limit (Tune ignores max_concurrent_trials for it)
        search = BasicVariantGenerator(random_state=s.seed, max_concurrent=s.max_concurrent_trials)
    scheduler = None
    if cfg.asha.enabled:
        scheduler = ASHAScheduler(time_attr="epochs_done", max_t=max_epochs(cfg), grace_period=cfg.asha.grace_period,
                                  reduction_factor=cfg.asha.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=tune_domains(axes),
        tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, search_alg=search, scheduler=scheduler,
                                    num_samples=s.num_samples,
                                    max_concurrent_trials=s.max_concurrent_trials if s.algorithm == "optuna" else None,
                                    trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname,
                                    # a trial's process ends with its trial, not by Tune's clean-up kill,
                                    # whose SIGTERM printed tracebacks (N25); a trial trains for minutes
                                    reuse_actors=False),
        run_config=tune.RunConfig(name=sweep.name, storage_path=sweep.ray_storage, verbose=0,
                                  callbacks=[outcome_recorder(sweep)]),
    )


def trial_rows(grid, axes: list[Axis], sweep: sweeps.Sweep, epochs: int, metric: str) -> list[dict]:
    """One leaderboard row per trial, from Tune's results and the trial's run.json."""
    rows = []
    for result in grid:
        trial_id = os.path.basename(result.path)
        history = result.metrics_dataframe
        row = {"trial": trial_id, **{a.key: result.config.get(a.key) for a in axes},
               "epochs": 0, "best_val_loss": None, "bits_per_token": None,
               # Tune's clock; none for a trial whose reports were lost with an earlier driver
               "wall_s": round(float(result.metrics["time_total_s"]), 1) if result.metrics.get("time_total_s")
               else None,
               "run_dir": os.path.join(sweep.dir, "trials", trial_id)}
        if history is not None and metric in history and len(history):
            best = history.loc[history[metric].idxmin()]
            row.update(epochs=int(history["epochs_done"].max()), best_val_loss=float(best["val/loss"]),
                       bits_per_token=float(best["val/bits_per_token"]))
        state_path = os.path.join(row["run_dir"], "run.json")
        outcome = read_json_object(state_path, RunStateError) if os.path.exists(state_path) else {}
        row.update(run_end(row, sweep.trial_run(trial_id)))
        if result.error is not None or outcome.get("tune_outcome") == "error":
            row["status"] = "FAILED"
        elif outcome.get("tune_outcome") != "complete":
            row["status"] = "INTERRUPTED"
        else:
            row["status"] = "FINISHED" if row["epochs"] >= epochs else "STOPPED"  # ASHA stopped it early
        row["mlflow_run_id"], row["tracking_uri"] = outcome.get("mlflow_run_id"), outcome.get("tracking_uri")
        row["curve"] = validation_curve(history, row)
        rows.append(row)
    return sweeps.sort_rows(rows)


def validation_curve(history, row: dict) -> list[list[float]]:
    """[[epoch, val/loss], …] of a trial: Tune's reports, or, where those were lost with an earlier
    driver (a restored trial's start empty), the per-epoch val/loss of the trial's MLflow run."""
    curve = []
    if history is not None and "val/loss" in history and "epochs_done" in history:
        curve = [[int(e), float(v)] for e, v in zip(history["epochs_done"], history["val/loss"], strict=True)]
    if len(curve) < row["epochs"] and row.get("tracking_uri") and row.get("mlflow_run_id"):
        points = mlflow_runs.client(row["tracking_uri"]).get_metric_history(row["mlflow_run_id"], "val/loss")
        curve = [[i + 1, m.value] for i, m in enumerate(sorted(points, key=lambda m: m.step))]
    return curve


def trial_checkpoints(run: runs.Run) -> str | None:
    """The trial's last.pt, copied from Ray's storage if Tune stopped it first (None: no epoch)."""
    from ..jobs.training import copy_checkpoint_files, latest_ray_checkpoint

    last = os.path.join(run.checkpoint_dir, "last.pt")
    if not (os.path.exists(last) and os.path.exists(os.path.join(run.checkpoint_dir, "best.pt"))):
        try:
            copy_checkpoint_files(latest_ray_checkpoint(run), run.checkpoint_dir)
        except RunStateError:
            return None
    return last if os.path.exists(last) else None


def run_end(row: dict, run: runs.Run) -> dict:
    """Epochs run and best val/loss from the trial's own last.pt (Tune's copy can be lost)."""
    from ..core.checkpoint import load_checkpoint

    last = trial_checkpoints(run)
    if not last:
        return {}
    ckpt = load_checkpoint(last)
    out = {"epochs": max(row["epochs"], ckpt["epoch"] + 1)}
    best = ckpt["metrics"].get("best_val_loss")
    if best is not None and (row["best_val_loss"] is None or best < row["best_val_loss"]):
        out.update(best_val_loss=best, bits_per_token=best / math.log(2))
    return out


def close_trial_runs(rows: list[dict], sweep: sweeps.Sweep) -> None:
    """run.json and the MLflow run of every trial end with how the trial ended: a trial
    Tune stopped was killed mid-fit, before its own code could say so."""
    mlflow_status = {"FINISHED": runs.FINISHED, "STOPPED": runs.KILLED, "FAILED": runs.FAILED,
                     "INTERRUPTED": runs.KILLED}
    for row in rows:
        status = mlflow_status[row["status"]]
        run = sweep.trial_run(row["trial"])
        runs.write_state(run, status=status, trial_status=row["status"])
        if row["tracking_uri"] and row["mlflow_run_id"]:
            mlflow_runs.finish_run(row["tracking_uri"], row["mlflow_run_id"], status)


def register_best_trial(cfg: TuneJobConfig, best: dict, codebook: str, uri: str, log) -> dict:
    """The best trial's best.pt as its MLflow run's model, registered (`register_best=true`) under
    `train.tracking.model_name` (default `arplatform-<name>`)."""
    from ..jobs.mlflow_model import log_training_model

    job = dataclasses.replace(cfg.train, tracking=dataclasses.replace(cfg.train.tracking, register=True))
    logged = log_training_model(job, os.path.join(best["run_dir"], "checkpoints", "best.pt"), codebook, uri,
                                best["mlflow_run_id"])
    log(f"  best model:  {logged.get('registered_uri') or logged.get('skipped')}")
    return logged


def run_tune(cfg: TuneJobConfig, config_name: str | None = None, log=print) -> dict:
    from ..distributed.cluster import check_sweep_budget, credentials_kept_from_trials, environment, init_ray
    from ..distributed.code_data import build_rows

    t0 = time.perf_counter()
    config_name = config_name or cfg.name
    job = cfg.train
    axes = parse_space(cfg.space)
    check_space(axes, to_dict(job))  # every value a valid config, before Ray starts
    check_trial_count(axes, cfg.search.num_samples, "search.num_samples")
    check_search(cfg, axes)
    root = storage.Root(job.output_root)
    root.local_only("train.output_root", "sweeps keep their folders on a local or shared file system path for now "
                    "(the training, generate and pipeline stages take URIs)")
    sweep = sweeps.find_sweep(root, cfg.name, cfg.sweep_name) if cfg.resume else None
    files, facts = check_data(job)
    ray = init_ray(job.trainer.num_cpus)
    t = job.trainer
    check_sweep_budget(ray, cfg.search.max_concurrent_trials, cfg.trial_cpus, t.num_workers, t.cpus_per_worker,
                       t.use_gpu)
    train_rows, val_rows, facts = build_rows(files, facts, job.data, job.optim.seed)
    # now that the rows are counted: every value gives at least one full step
    check_space(axes, to_dict(job), lambda trial: plan_training(trial, facts, trial.trainer.num_workers))
    uri = mlflow_runs.tracking_uri(job.tracking.tracking_uri, job.output_root) if job.tracking.enabled else None
    trial_job = base_job(cfg, facts, uri, log)
    sweep = sweep or sweeps.new_sweep(root, cfg.name, cfg.sweep_name, config_name)
    log(f"sweep {sweep.name}{' (resumed)' if sweep.resumed else ''}: {sweep.dir}\n  "
        f"{len(axes)} axes ({', '.join(a.key for a in axes)}), {cfg.search.algorithm} search, "
        f"{cfg.search.num_samples} sample(s), {cfg.search.max_concurrent_trials} at once, "
        f"ASHA {'on' if cfg.asha.enabled else 'off'} over {max_epochs(cfg)} epochs")
    with tracked_sweep(cfg, sweep, uri, config_name) as parent:
        dataset = training_dataset(files, facts, root) if uri else None
        tuner = build_tuner(cfg, axes, trial_job, facts, {"train": train_rows, "val": val_rows}, sweep, parent,
                            config_name, dataset)
        # A trial restarted after its run had already trained every epoch (its driver died before
        # Tune saw the end) finishes without a new report; Tune's strict check would stop the sweep.
        with credentials_kept_from_trials(), environment({"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}):
            grid = tuner.fit()
        summary = finish(cfg, axes, grid, sweep, uri, parent, t0, log, facts.codebook_pt)
        if any(r["status"] == "INTERRUPTED" for r in summary["leaderboard"]):
            raise Interrupted(f"sweep {sweep.name} interrupted; resume=true continues it")  # Tune saved its state
    return summary


def finish(cfg: TuneJobConfig, axes: list[Axis], grid, sweep: sweeps.Sweep, uri: str | None, parent: str | None,
           t0: float, log, codebook: str | None = None) -> dict:
    rows = trial_rows(grid, axes, sweep, max_epochs(cfg), cfg.search.metric)
    close_trial_runs(rows, sweep)
    artifacts = sweeps.write_leaderboard(sweep, rows, [a.key for a in axes])
    sweeps.check_a_trial_ran([result.error for result in grid], sweep.dir)  # (the leaderboard says which failed)
    best = rows[0] if rows and rows[0]["best_val_loss"] is not None else None
    if best is not None:
        params = {a.key: best[a.key] for a in axes}
        artifacts.append(sweeps.write_best_yaml(sweep, apply_params(to_dict(cfg.train), params), best))
    artifacts += sweep_pictures.write_all(sweep.dir, sweep.name, rows, [a.key for a in axes], "best_val_loss",
                                          "best val/loss (nats/token)")
    seconds = time.perf_counter() - t0
    summary = {"sweep": sweep.name, "dir": sweep.dir, "seconds": seconds, "best": best, "leaderboard": rows,
               "mlflow_parent_run_id": parent}
    if uri and parent:
        for path in artifacts:
            mlflow_runs.log_artifact(uri, parent, path)
        if best is not None:
            mlflow_runs.log_metrics(uri, parent, {"best/val_loss": best["best_val_loss"],
                                               "best/bits_per_token": best["bits_per_token"], "wall_s": seconds})
            mlflow_runs.set_tag(uri, parent, "best_trial", best["trial"])
        if best is not None and cfg.register_best and codebook and best.get("mlflow_run_id"):
            summary["best_model"] = register_best_trial(cfg, best, codebook, uri, log)
    with open(os.path.join(sweep.dir, "leaderboard.md")) as f:
        log(f.read().rstrip())
    done = sum(r["status"] in ("FINISHED", "STOPPED") for r in rows)
    log(f"sweep done in {seconds:.0f} s: {done}/{len(rows)} trials ran to their end or an ASHA stop\n"
        f"  leaderboard: {artifacts[0]}")
    if best is not None:
        loss = best["best_val_loss"]
        log(f"  best:        trial {best['trial']}, val/loss {loss:.4f}"
            f"{'' if math.isfinite(loss) else ' (not finite)'}\n"
            f"  train it:    python -m arplatform train --config-dir {sweep.dir} --config-name best")
    return summary
