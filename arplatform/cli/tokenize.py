"""python -m arplatform tokenize --config-name tokenizer/mnist_sample [key=value …]"""

from __future__ import annotations

import sys

from ..config import TokenizerConfig
from . import run_stage


def main(argv=None) -> int:
    from ..stages.tokenize import run_tokenize

    return run_stage(TokenizerConfig, run_tokenize, "Images → VAE → codebook → codes.npy",
                     "tokenizer/mnist_sample", argv)


if __name__ == "__main__":
    sys.exit(main())
