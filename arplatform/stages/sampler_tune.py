"""The sampler sweep: Ray Tune over a checkpoint's sampling settings; the best become its defaults.

    run_sampler_tune(cfg)
      1. check     the space (keys of `sample:`), the checkpoint, codebook and VAE; before Ray
      2. judge     the real data and the platform's classifier (trained once, cached)
      3. fit       each trial generates `num_samples` with the swept keys set (the rest the
                   checkpoint's) and reports their Fréchet distance and class accuracy
      4. finish    leaderboard; the swept keys' best values → sampler.json beside the checkpoint
"""

from __future__ import annotations

import dataclasses
import os
import time

from ..config import SamplerSweepConfig, TrainJobConfig, to_dict
from ..config.tune_space import apply_params, check_space, check_trial_count, parse_space, tune_domains
from ..core.errors import ConfigError
from ..core.io import save_json
from ..outputs import storage, sweeps
from ..tracking import sweep_pictures

SAMPLER_FILE = "sampler.json"
METRICS = ("frechet", "accuracy", "frechet_over_reconstructions")


def sampler_trial(params: dict, *, gen: dict, real, classifier_state: dict, folder: str) -> None:
    """One trial: generate with the trial's settings into its own folder, score, report."""
    import torch
    from ray import tune

    from ..config import GenerateConfig, from_dict
    from ..jobs.generation import run_generate
    from ..jobs.sample_quality import Classifier, evaluate_images

    torch.set_num_threads(gen["threads"])
    gen = {k: v for k, v in gen.items() if k != "threads"}
    sample = dict(gen["sample"], **{k.split(".")[1]: v for k, v in params.items()})
    out = os.path.join(folder, "trials", tune.get_context().get_trial_id())
    cfg = from_dict(GenerateConfig, dict(gen, sample=sample, out=out, engine="local"))
    run_generate(cfg, log=lambda *a: None)
    import numpy as np

    with np.load(os.path.join(out, "samples.npz"), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    images = (images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)).astype("float32") / 255.0
    classifier = Classifier(**classifier_state["config"])
    classifier.load_state_dict(classifier_state["state_dict"])
    report = evaluate_images(images, labels, real, classifier.eval())
    fd = report["frechet"]
    tune.report({"frechet": fd["samples"], "accuracy": report.get("accuracy", float("nan")),
                 "frechet_over_reconstructions": fd.get("samples_over_reconstructions", float("nan"))})


def sweep_models(cfg: SamplerSweepConfig) -> tuple:
    """The checkpoint's GenerateConfig (absolute paths: trials run in Ray's working directories)
    and its checked models; a URI or an unconditional checkpoint is refused."""
    from ..config import GenerateConfig, from_dict
    from ..jobs.sampling import resolve_models

    for key in ("output_root", "transformer_ckpt"):
        storage.Location(getattr(cfg, key)).local_only(key, "the sampler sweep reads and writes local files only (copy "
                                                      "the checkpoint, or run it on the head with a local output_root)")
    gen = from_dict(GenerateConfig, {"transformer_ckpt": os.path.abspath(cfg.transformer_ckpt),
                                     "num_samples": cfg.num_samples, "seed": cfg.seed,
                                     "output_root": os.path.abspath(cfg.output_root)})
    models = resolve_models(gen)
    if not models["layout"].conditional:
        raise ConfigError(f"{models['transformer_ckpt']}: an unconditional checkpoint; the sweep scores class "
                          "accuracy and guidance, which need classes")
    return dataclasses.replace(gen, codebook_pt=models["codebook_pt"], vae_ckpt=models["vae_ckpt"]), models


def build_sampler_tuner(cfg: SamplerSweepConfig, axes: list, gen, real, classifier, sweep):
    """A Tuner whose every trial generates with its settings and is scored (`sampler_trial`)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    trainable = tune.with_resources(tune.with_parameters(
        sampler_trial, gen=to_dict(gen) | {"threads": max(1, int(cfg.cpus_per_trial))}, real=real,
        classifier_state={"config": classifier.config, "state_dict": classifier.state_dict()}, folder=sweep.dir),
        {"CPU": cfg.cpus_per_trial})
    return tune.Tuner(trainable, param_space=tune_domains(axes), tune_config=tune.TuneConfig(
        metric="frechet", mode="min", num_samples=cfg.trials,
        # a trial's process ends with its trial: a reused one lives until Tune's clean-up kills it,
        # and its SIGTERM, landing in whatever Python code runs then, printed a traceback (N25)
        reuse_actors=False,
        search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials)),
        run_config=tune.RunConfig(name=sweep.name, storage_path=sweep.ray_storage, verbose=0))


def leaderboard_rows(grid, axes: list) -> list[dict]:
    rows = []
    for result in grid:
        m = result.metrics or {}
        rows.append({"trial": os.path.basename(result.path), "status": "FAILED" if result.error else "FINISHED",
                     **{a.key: result.config.get(a.key) for a in axes}, **{k: m.get(k) for k in METRICS}})
    return sweeps.sort_rows(rows, "frechet")


def run_sampler_tune(cfg: SamplerSweepConfig, config_name: str | None = None, log=print) -> dict:
    from ..core.budget import check_fits
    from ..distributed.cluster import credentials_kept_from_trials, init_ray
    from ..jobs.real_images import real_data
    from ..jobs.sample_quality import classifier_dir, load_or_train_classifier

    t0 = time.perf_counter()
    axes = parse_space(cfg.space, sections=("sample",))
    check_space(axes, to_dict(TrainJobConfig(name="space-check")))
    check_trial_count(axes, cfg.trials, "trials")
    gen, models = sweep_models(cfg)
    ray = init_ray()
    check_fits("max_concurrent_trials", f"{cfg.max_concurrent_trials} trials × {cfg.cpus_per_trial:g} CPU",
               cfg.max_concurrent_trials * cfg.cpus_per_trial, ray.cluster_resources().get("CPU", 0), "CPU",
               "lower max_concurrent_trials or cpus_per_trial")
    real, tok_cfg, _ = real_data(models["codebook_pt"], cfg.num_samples, log)
    classifier, _ = load_or_train_classifier(classifier_dir(cfg.output_root, tok_cfg.data), real, log)
    sweep = sweeps.new_sweep(storage.Root(cfg.output_root), cfg.name, folder="sampler_tune")
    # made here, before the trials: each trial's generate checks its own folder below it by making
    # and removing what is missing, so a `trials` folder made by one trial could vanish under another
    os.makedirs(os.path.join(sweep.dir, "trials"), exist_ok=True)
    with credentials_kept_from_trials():
        grid = build_sampler_tuner(cfg, axes, gen, real, classifier, sweep).fit()
    rows = leaderboard_rows(grid, axes)
    sweeps.write_leaderboard(sweep, rows, [a.key for a in axes], METRICS)
    # the settings against accuracy and Fréchet distance (parallel.png), with the leaderboard (report.md)
    sweep_pictures.write_all(sweep.dir, sweep.name, rows, [a.key for a in axes] + ["accuracy"], "frechet",
                             "Fréchet distance")
    sweeps.check_a_trial_ran([result.error for result in grid], sweep.dir)  # nothing scored: say why, exit 2
    best = rows[0] if rows and rows[0]["frechet"] is not None else None
    if best is not None:
        swept = apply_params({"sample": {}}, {a.key: best[a.key] for a in axes})["sample"]
        write_sampler_settings(models["transformer_ckpt"], swept, best, sweep.dir)
    with open(os.path.join(sweep.dir, "leaderboard.md")) as f:
        log(f.read().rstrip())
    log(f"sampler sweep done in {time.perf_counter() - t0:.0f} s: {sweep.dir}")
    if best is not None:
        log(f"  best settings → {os.path.join(os.path.dirname(models['transformer_ckpt']), SAMPLER_FILE)}")
    return {"dir": sweep.dir, "best": best, "rows": rows}


def write_sampler_settings(checkpoint: str, swept: dict, best: dict, sweep_dir: str) -> str:
    """sampler.json beside the checkpoint: the swept keys at the best trial's values, over those an
    earlier sweep tuned for the same bytes; nothing else."""
    from ..jobs.sampling import tuned_sampler_settings

    path = os.path.join(os.path.dirname(checkpoint), SAMPLER_FILE)
    settings = tuned_sampler_settings(checkpoint) | swept
    save_json(path, {"sample": settings, "tuned_on": checkpoint, "frechet": best["frechet"],
                     "checkpoint_sha256": storage.Location(checkpoint).sha256(), "accuracy": best["accuracy"],
                     "sweep": sweep_dir})
    return path
