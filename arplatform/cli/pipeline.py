"""python -m arplatform pipeline --config-name pipeline/mnist_sample [key=value …] [tokenizer.<k>=v …] [train.<k>=v …]

The whole chain: tokenize → train (Ray Train) → generate (Ray Data) → evaluate → report. It
runs the stages, so it sits above them, with the other commands.

    run_pipeline(cfg)
      1. configs    every stage's config composed and checked before any work
      2. tokenize   reused when the published tokenizer output was made with the same config
      3. train      reused when the published checkpoint's run had the same config and codebook;
                    a run of them a killed pipeline left unfinished is continued (resume=true)
      4. generate   into samples/<config>/<run>/: resumes, so a finished folder is reused
      5. evaluate   reused when quality.json covers the same samples
      6. report     reports/<name>/report.{md,html} with the grid, tokenizer figures, the
                    training curve, the quality table and the MLflow runs

`force` redoes a stage (and what depends on it); `tokenizer.<k>=v` and `train.<k>=v` go to that
stage's config.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from ..config import GenerateConfig, PipelineConfig, TokenizerConfig, TrainJobConfig, compose, from_dict, to_dict
from ..core.errors import CheckpointError, DataError, RunStateError
from ..jobs.training import bucket_version
from ..outputs import runs, storage
from ..outputs.runs import seed_checkpoint
from ..tracking import mlflow_runs
from . import run_stage


def stage_configs(cfg: PipelineConfig) -> tuple[TokenizerConfig, TrainJobConfig]:
    root = storage.Location(cfg.output_root)
    tok = from_dict(TokenizerConfig, compose(cfg.tokenizer_config, [f"output_root={root}",
                                                                     *cfg.tokenizer_overrides]))
    job = from_dict(TrainJobConfig, compose(cfg.train_config, [
        f"output_root={root}", f"data.codebook_dir={root.file(f'codebook/{tok.name}')}", *cfg.train_overrides]))
    return tok, job


def read_json(folder: storage.Location, name: str) -> dict:
    """The JSON object `name` in `folder`; {} when there is none."""
    return folder.read_json_object(name, DataError) if folder.exists(name) else {}


def _saved_config(folder: storage.Location, name: str) -> dict | None:
    saved = read_json(folder, name) or None
    if saved:
        saved.pop("config_name", None)
    return saved


def tokenizer_done(tok: TokenizerConfig, root: storage.Root) -> bool:
    folder = root / f"codebook/{tok.name}"
    return _saved_config(folder, "tokenizer_config.json") == to_dict(tok) and folder.exists("codebook.pt")


def published_run(job: TrainJobConfig, root: storage.Root) -> dict | None:
    """The run behind the seed path when it trained this very config on this very codebook
    (its `sample:` section aside: sampling settings change the samples, not the training; and
    whether it was resumed, which `interrupted_run` decides)."""
    from ..core.checkpoint import load_checkpoint

    seed = storage.Location(seed_checkpoint(root, job.name))
    run_dir = read_json(seed.parent, "published.json").get("run_dir")
    if not run_dir:
        return None
    run = storage.Location(run_dir)
    saved = _saved_config(run, "config.json")
    if saved and job.optim.precision == "auto":
        saved["optim"]["precision"] = "auto"  # the run saved what `auto` resolved to on its machine
    aside = {"sample": None, "resume": None, "run_name": None}  # neither changes what was trained
    if saved is None or saved | aside != to_dict(job) | aside:
        return None
    codebook = storage.Location(job.data.codebook_dir) / "codebook.pt"
    # as the run recorded it: the real version folder (a link's target, or a bucket's version.json)
    codebook = bucket_version(codebook) if codebook.remote else codebook.real()
    trained_on = load_checkpoint(seed.fetch()).get("train_config", {}).get("codebook_pt")
    if trained_on != codebook:
        return None  # the tokenizer was redone since
    return run.read_json_object("run.json", DataError) | {"run_dir": run_dir}


def interrupted_run(job: TrainJobConfig, root: storage.Root) -> str | None:
    """The config's latest run when its driver died or was stopped (run.json RUNNING or KILLED,
    no driver holding it) after Ray registered a checkpoint, and it trains these model, optim and
    data settings on this very codebook: the pipeline continues it rather than start again. A run
    that FAILED (a diverging loss) is not continued: it would fail the same way."""
    from ..core.checkpoint import load_checkpoint
    from ..jobs.training import latest_ray_checkpoint
    from ..stages.train import changed_settings

    try:
        run = runs.find_run(root, job.name, job.run_name)  # a run_name given: that run only
        state = runs.read_state(run)
        codebook = storage.Location(job.data.codebook_dir) / "codebook.pt"
        if state.get("status") not in (runs.RUNNING, runs.KILLED) or state.get("codebook_sha256") != codebook.sha256():
            return None
        with runs.held(run), latest_ray_checkpoint(run).as_directory() as d:  # held: no live driver has it
            saved = load_checkpoint(os.path.join(d, "last.pt")).get("train_config") or {}
    except (RunStateError, CheckpointError, DataError, OSError):
        return None  # nothing to continue: a fresh run
    return None if changed_settings(saved, to_dict(job)) else run.name


def training_job(job: TrainJobConfig, root: storage.Root, fresh: bool, log) -> TrainJobConfig:
    """The job the train stage runs: a fresh run, or the interrupted one continued."""
    name = None if fresh or job.resume else interrupted_run(job, root)
    if name is None:
        return job
    log(f"[train] continuing run {name}, which stopped before it finished (same settings and codebook; "
        "force=[train] starts a new run)")
    return dataclasses.replace(job, resume=True, run_name=name)


def generate_config(cfg: PipelineConfig, job: TrainJobConfig, checkpoint: str, samples: str,
                    root: str) -> GenerateConfig:
    """`checkpoint` as `generate` would draw it, into the pipeline's samples folder; explicit are
    the `train.sample.<key>=…` overrides and the `sample:` keys changed since it was trained."""
    from ..config import SAMPLING_KEYS
    from ..core.checkpoint import load_model

    overridden = {o.split("=", 1)[0].lstrip("+").removeprefix("sample.") for o in cfg.train_overrides
                  if o.lstrip("+").startswith("sample.")}
    now = {k: v for k, v in to_dict(job.sample).items() if k in SAMPLING_KEYS}
    trained = (load_model(storage.Location(checkpoint).fetch())[2].get("train_config") or {}).get("sample") or {}
    explicit = {k: v for k, v in now.items() if k in overridden or (k in trained and trained[k] != v)}
    return from_dict(GenerateConfig, {
        "transformer_ckpt": checkpoint, "num_samples": cfg.num_samples, "out": samples, "output_root": root,
        "sample": explicit, "engine": cfg.generate_engine, "actors": cfg.actors, "cpus_per_actor": cfg.cpus_per_actor})


def parameter_count_of(root: storage.Root, name: str) -> int:
    """A published checkpoint's parameters (a run from before summaries recorded them)."""
    from ..core.checkpoint import load_model

    return load_model(storage.Location(seed_checkpoint(root, name)).fetch())[0].num_params()


def write_pipeline_report(cfg: PipelineConfig, root: storage.Root, stages: tuple, run: dict,
                          samples: storage.Location, report: dict, times: dict) -> tuple[str, str]:
    """reports/<name>/report.{md,html} (built in this machine's mirror of a URI root, then pushed)."""
    from ..stages.evaluate import quality_table
    from ..tracking.report import training_curve, write_report

    tok, job = stages
    folder = root.local_path("reports", cfg.name)
    curve = training_curve(run.get("tracking_uri"), run.get("mlflow_run_id"), os.path.join(folder, "curve.png")) \
        if run.get("tracking_uri") else None
    pictures = {"curve": curve}
    for key in ("grid", "nearest", "reconstructions"):
        pictures[key] = samples.fetch(f"{key}.png") if samples.exists(f"{key}.png") else None
    run_summary = read_json(storage.Location(run["run_dir"]), "summary.json")
    runs = [f"training run {run.get('run_name')}: {run['run_dir']}", f"samples: {samples}"]
    if run.get("tracking_uri"):
        runs.append(f"MLflow run {run.get('mlflow_run_id')} in {run['tracking_uri']}: "
                    f"{mlflow_runs.run_page(run['tracking_uri'], run.get('mlflow_run_id'))}")
    md, html = write_report(folder, {
        "name": cfg.name, "run_name": run.get("run_name"), "pictures": pictures, "quality": report,
        "quality_table": quality_table(report), "runs": runs, "times": times,
        "tokenizer": read_json(root / f"codebook/{tok.name}", "tokenizer_eval.json"),
        "best_val_loss": (run_summary.get("final") or {}).get("best_val_loss"),
        "params": (run_summary.get("model_size") or {}).get("parameters") or parameter_count_of(root, job.name),
        "config": {"pipeline": to_dict(cfg), "tokenizer": to_dict(tok), "train": to_dict(job)}})
    root.push(folder)
    return root.public(md), root.public(html)


class Stages:
    """Runs the chain's stages one after another: each is reused when done with the same config
    (unless `force` names it), else run; the wall time of each is kept."""

    def __init__(self, force: list[str], log):
        self.force, self.log, self.times = force, log, {}

    def run(self, name: str, done: bool, work, output: str) -> None:
        start = time.perf_counter()
        reuse = done and name not in self.force
        if reuse:
            self.log(f"[{name}] reused: {output} (same config; force=[{name}] redoes it)")
        else:
            self.log(f"[{name}] running")
            work()
        key = f"{name} (reused)" if reuse else name
        self.times[key] = time.perf_counter() - start
        self.log(f"[{name}] done in {self.times[key]:.0f} s")


def samples_done(cfg: PipelineConfig, gen: GenerateConfig, samples: storage.Location, log) -> bool:
    """Whether the pipeline's samples folder holds what `gen` draws. A folder drawn under other
    settings, holding more than asked, or forced is emptied first (under its writer lock)."""
    from ..jobs.generation import clear_samples_folder, manifest_settings
    from ..jobs.sampling import checkpoint_sampling

    manifest = read_json(samples, "manifest.json")
    drawn_with = checkpoint_sampling(gen.transformer_ckpt, gen.sample)  # as run_generate resolves them
    same_settings = manifest.get("settings") == manifest_settings(gen, drawn_with)  # what the folder was drawn with
    if manifest and not same_settings:  # the pipeline's own folder, drawn under other settings
        log(f"[generate] the sampling settings changed since {samples} was drawn: drawing again")
        clear_samples_folder(samples.path)
    elif manifest.get("num_written", 0) > cfg.num_samples:  # generate refuses a folder holding more
        log(f"[generate] {samples} holds {manifest['num_written']} samples, {cfg.num_samples} asked: drawing again")
        clear_samples_folder(samples.path)
    complete = (same_settings and manifest.get("num_written") == cfg.num_samples
                and samples.exists("samples.npz"))
    if "generate" in cfg.force and complete:
        clear_samples_folder(samples.path)
        complete = False
    return complete


def evaluation_done(cfg: PipelineConfig, samples: storage.Location) -> bool:
    return "generate" not in cfg.force and read_json(samples, "quality.json").get("num_samples") == cfg.num_samples


def check_stores(tok: TokenizerConfig, job: TrainJobConfig) -> None:
    """A URI output root needs a named MLflow store: refused before any stage runs."""
    for stage_tracking, root in ((tok.tracking, tok.output_root), (job.tracking, job.output_root)):
        if stage_tracking.enabled:
            mlflow_runs.tracking_uri(stage_tracking.tracking_uri, root)


def run_pipeline(cfg: PipelineConfig, config_name: str | None = None, log=print) -> dict:
    from ..jobs.generation import run_generate
    from ..stages.evaluate import evaluate_samples, quality_table
    from ..stages.tokenize import run_tokenize
    from ..stages.train import run_train

    tok, job = stage_configs(cfg)  # a bad key of any stage stops here, before any work
    root = storage.Root(cfg.output_root)  # resolved once (each stage it runs resolves its own)
    root.check_writable("output_root")
    check_stores(tok, job)
    t0, stages = time.perf_counter(), Stages(cfg.force, log)
    stages.run("tokenize", tokenizer_done(tok, root),
               lambda: run_tokenize(tok, config_name=cfg.tokenizer_config, log=log), root.file(f"codebook/{tok.name}"))
    redo_train = "tokenize" in cfg.force  # new codes: a new model
    fresh = redo_train or "train" in cfg.force
    stages.run("train", published_run(job, root) is not None and not redo_train,
               lambda: run_train(training_job(job, root, fresh, log), config_name=cfg.train_config, log=log),
               seed_checkpoint(root, job.name))
    run = published_run(job, root)
    samples = root / f"samples/{job.name}/{os.path.basename(run['run_dir'])}"
    gen = generate_config(cfg, job, seed_checkpoint(root, job.name), samples.path, root.path)
    stages.run("generate", samples_done(cfg, gen, samples, log), lambda: run_generate(gen, log=log), samples.path)
    stages.run("evaluate", evaluation_done(cfg, samples), lambda: evaluate_samples(samples.path, root.path, log),
               samples.file("quality.json"))
    report = samples.read_json_object("quality.json", DataError)
    md, html = write_pipeline_report(cfg, root, (tok, job), run, samples, report, stages.times)
    log("\n" + quality_table(report))
    log("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.times.items())
        + f"; total {time.perf_counter() - t0:.0f} s")
    log(f"report: {md}\n        {html}")
    return {"report": md, "html": html, "quality": report, "times": stages.times, "samples": samples.path}


def build_config(config_name: str, overrides: list[str], config_dir: str) -> PipelineConfig:
    routed = {"tokenizer.": [], "train.": []}
    rest = []
    for o in overrides:
        prefix = next((p for p in routed if o.startswith(p)), None)
        if prefix:
            routed[prefix].append(o[len(prefix):])
        else:
            rest.append(o)
    cfg = compose(config_name, rest, config_dir)
    cfg["tokenizer_overrides"] = [*cfg.get("tokenizer_overrides", []), *routed["tokenizer."]]
    cfg["train_overrides"] = [*cfg.get("train_overrides", []), *routed["train."]]
    return from_dict(PipelineConfig, cfg)


def run_main(argv, description: str, aliases: dict[str, str] | None = None) -> int:
    return run_stage(PipelineConfig, run_pipeline, description, "pipeline/mnist_sample", argv, build=build_config,
                     aliases=aliases)


def main(argv=None) -> int:
    return run_main(argv, "The whole chain: tokenize, train, generate, evaluate, report")


if __name__ == "__main__":
    sys.exit(main())
