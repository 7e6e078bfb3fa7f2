"""python -m arplatform.evaluate --codebook-dir experiments/codebook/mnist_sample [--vae PATH]

Held-out tokenizer quality of a tokenizer output folder: PSNR and SSIM of real
vs VAE reconstruction, real vs quantised, VAE vs quantised; codebook usage and
perplexity. Rewrites `tokenizer_eval.json` there and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import exit_code


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Evaluate a tokenizer output folder on its held-out images.")
    p.add_argument("--codebook-dir", required=True)
    p.add_argument("--vae", default=None, help="VAE checkpoint (default: the one the codebook names)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from .stages.evaluate import evaluate_codebook_dir

    def evaluate():
        report = evaluate_codebook_dir(args.codebook_dir, args.vae, args.device)
        print(json.dumps(report, indent=2, sort_keys=True))

    return exit_code(evaluate)


if __name__ == "__main__":
    sys.exit(main())
