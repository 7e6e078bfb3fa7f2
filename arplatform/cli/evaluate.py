"""Evaluation: a tokenizer output folder, or a folder of generated samples.

    arplatform evaluate codebook_dir=experiments/codebook/mnist_sample [vae=PATH]
    arplatform evaluate samples samples_dir=experiments/samples/mnist_sample
    (or python -m arplatform evaluate [samples] --codebook-dir / --samples-dir …, the flags)

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

from . import ArgumentParser, exit_code, overrides_as_flags


def parse(p: argparse.ArgumentParser, argv: list[str], flags: dict[str, str]) -> argparse.Namespace | int:
    """Flags, or the same as key=value; an unknown key is one line (exit 2)."""
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"the flags as key=value: {', '.join(flags)}")
    parsed = []
    if code := exit_code(lambda: parsed.append(overrides_as_flags(argv, flags))):
        return code
    return p.parse_args(parsed[0])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["samples"]:
        return samples_main(argv[1:])
    p = ArgumentParser(description="Evaluate a tokenizer output folder on its held-out images "
                                            "(or: evaluate samples samples_dir=DIR).")
    p.add_argument("--codebook-dir", "--codebook_dir", dest="codebook_dir")
    p.add_argument("--vae", default=None, help="VAE checkpoint (default: the one the codebook names)")
    p.add_argument("--device", default="auto")
    args = parse(p, argv, {"codebook_dir": "--codebook_dir", "vae": "--vae", "device": "--device"})
    if isinstance(args, int):
        return args
    if not args.codebook_dir:
        p.error("codebook_dir (--codebook-dir) is required")
    from ..stages.evaluate import evaluate_codebook_dir

    def evaluate():
        # stdout is the JSON report: progress goes to stderr
        report = evaluate_codebook_dir(args.codebook_dir, args.vae, args.device,
                                       log=lambda line: print(line, file=sys.stderr))
        print(json.dumps(report, indent=2, sort_keys=True))

    return exit_code(evaluate)


def samples_main(argv) -> int:
    p = ArgumentParser(prog="arplatform evaluate samples",
                                description="Score a folder of generated samples against the real dataset.")
    p.add_argument("--samples-dir", "--samples_dir", dest="samples_dir", help="a folder written by generate")
    p.add_argument("--output-root", "--output_root", dest="output_root", default="experiments",
                   help="where the classifier is cached (classifiers/)")
    args = parse(p, argv, {"samples_dir": "--samples_dir", "output_root": "--output_root"})
    if isinstance(args, int):
        return args
    if not args.samples_dir:
        p.error("samples_dir (--samples-dir) is required")
    from ..stages.evaluate import evaluate_samples, quality_table

    def evaluate():
        print(quality_table(evaluate_samples(args.samples_dir, args.output_root)))

    return exit_code(evaluate)


if __name__ == "__main__":
    sys.exit(main())
