"""Evaluation: a tokenizer output folder, or a folder of generated samples.

    python -m arplatform.evaluate --codebook-dir experiments/codebook/mnist_sample [--vae PATH]
    python -m arplatform.evaluate samples --samples-dir experiments/samples/mnist_sample

Tokenizer: held-out PSNR and SSIM of real vs VAE reconstruction, real vs quantised,
VAE vs quantised; codebook usage and perplexity (rewrites `tokenizer_eval.json`).
Samples: class accuracy under a classifier the platform trains on the real images,
Fréchet distance on its features (with the tokenizer's reconstructions and real
images as reference lines), memorisation, held-out bits per code (`quality.json`,
`quality.md`, and the checkpoint's MLflow run).
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import exit_code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["samples"]:
        return samples_main(argv[1:])
    p = argparse.ArgumentParser(description="Evaluate a tokenizer output folder on its held-out images "
                                            "(or: evaluate samples --samples-dir DIR).")
    p.add_argument("--codebook-dir", required=True)
    p.add_argument("--vae", default=None, help="VAE checkpoint (default: the one the codebook names)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from .stages.evaluate import evaluate_codebook_dir

    def evaluate():
        report = evaluate_codebook_dir(args.codebook_dir, args.vae, args.device)
        print(json.dumps(report, indent=2, sort_keys=True))

    return exit_code(evaluate)


def samples_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m arplatform.evaluate samples",
                                description="Score a folder of generated samples against the real dataset.")
    p.add_argument("--samples-dir", required=True, help="a folder written by arplatform.generate")
    p.add_argument("--output-root", default="experiments", help="where the classifier is cached (classifiers/)")
    args = p.parse_args(argv)
    from .stages.evaluate import evaluate_samples, quality_table

    def evaluate():
        print(quality_table(evaluate_samples(args.samples_dir, args.output_root)))

    return exit_code(evaluate)


if __name__ == "__main__":
    sys.exit(main())
