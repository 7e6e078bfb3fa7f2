"""The main job: MNIST sample → tokenizer → GPT on Ray Train → samples → quality report.

    python -m arplatform.demo [--out experiments] [--num_samples 500] [key=value … for the training job]

1. tokenize (configs/tokenizer/mnist_sample.yaml): VAE, K=256 codebook, codes.npy
2. train (configs/transformer/mnist_sample.yaml): a class-conditional GPT on the
   codes with Ray Train, 2 CPU workers, tracked in MLflow
3. generate: `--num_samples` digits, balanced over the classes, from best.pt with the
   KV cache, decoded through the codebook and the VAE (`arplatform.generate`)
4. evaluate: class accuracy, Fréchet distance and memorisation of those samples
   against the real digits (`arplatform.evaluate samples`)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from .cli import compose, exit_code
from .config import GenerateConfig, TokenizerConfig, TrainJobConfig, from_dict, to_dict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="MNIST sample → codes → GPT (Ray Train) → generated digits → report.")
    p.add_argument("--out", default="experiments", help="output root")
    p.add_argument("--num_samples", type=int, default=500, help="samples to generate and evaluate")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the training job")
    args = p.parse_args(argv)
    from .stages.evaluate import evaluate_samples, quality_table
    from .stages.generate import run_generate
    from .stages.tokenize import run_tokenize
    from .stages.train import run_train

    def demo():
        # every config is built before any work starts, so a bad override costs nothing
        tok_cfg = from_dict(TokenizerConfig, compose("tokenizer/mnist_sample", [f"output_root={args.out}"]))
        codebook_dir = os.path.join(args.out, "codebook", tok_cfg.name)
        job = from_dict(TrainJobConfig, compose("transformer/mnist_sample", [
            f"output_root={args.out}", f"data.codebook_dir={codebook_dir}", *args.overrides]))
        samples_dir = os.path.join(args.out, "samples", job.name)
        # sampled with the training config's own settings (its sample: section), as `generate` does
        gen = from_dict(GenerateConfig, {"num_samples": args.num_samples, "output_root": args.out,
                                         "transformer_ckpt": os.path.join(args.out, "transformer", job.name,
                                                                          "checkpoints", "best.pt"),
                                         "sample": to_dict(job.sample)})
        times, t0 = {}, time.perf_counter()

        def stage(name, fn):
            start = time.perf_counter()
            result = fn()
            times[name] = time.perf_counter() - start
            return result

        stage("tokenize", lambda: run_tokenize(tok_cfg, config_name="tokenizer/mnist_sample"))
        summary = stage("train", lambda: run_train(job, config_name="transformer/mnist_sample"))
        # a fresh folder for this run's checkpoint (a folder holds the samples of one checkpoint)
        out = os.path.join(samples_dir, summary["run_name"])
        stage("generate", lambda: run_generate(dataclasses.replace(gen, out=out)))
        report = stage("evaluate", lambda: evaluate_samples(out, args.out))
        print("\n" + quality_table(report))
        print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
              + f"; total {time.perf_counter() - t0:.0f} s")
        print(f"sample grid: {out}/grid.png (one row per digit)\nreport:      {out}/quality.md")

    return exit_code(demo)


if __name__ == "__main__":
    sys.exit(main())
