"""Evaluation of a tokenizer folder (PSNR, SSIM, codebook usage) or a samples folder (class
accuracy, Fréchet distance, memorisation, bits per code):

    arplatform evaluate codebook_dir=experiments/codebook/mnist_sample [vae=PATH] [device=auto]
    arplatform evaluate samples samples_dir=experiments/samples/mnist_sample [output_root=…]
"""

from __future__ import annotations

import json
import sys

from ..config import SamplesEvalConfig, TokenizerEvalConfig
from . import key_flags, run_stage


def evaluate_tokenizer(cfg: TokenizerEvalConfig, config_name: str) -> None:
    from ..stages.evaluate import evaluate_codebook_dir

    # stdout is the JSON report: progress goes to stderr
    report = evaluate_codebook_dir(cfg.codebook_dir, cfg.vae, cfg.device, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(report, indent=2, sort_keys=True))


def evaluate_samples(cfg: SamplesEvalConfig, config_name: str) -> None:
    from ..stages.evaluate import evaluate_samples, quality_table

    print(quality_table(evaluate_samples(cfg.samples_dir, cfg.output_root)))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["samples"]:
        return run_stage(SamplesEvalConfig, evaluate_samples, "Score a folder of generated samples against the real "
                         "dataset.", "evaluate_samples/base", argv[1:], aliases=key_flags(SamplesEvalConfig))
    return run_stage(TokenizerEvalConfig, evaluate_tokenizer, "Evaluate a tokenizer output folder on its held-out "
                     "images (or: evaluate samples samples_dir=DIR).", "evaluate/base", argv,
                     aliases=key_flags(TokenizerEvalConfig))


if __name__ == "__main__":
    sys.exit(main())
