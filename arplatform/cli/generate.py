"""arplatform generate --transformer_ckpt … [--vae_ckpt …] [--codebook_pt …] [key=value …]

Images from a trained GPT (codes with the KV cache, decoded through the codebook and the VAE
the checkpoint trained with), here or on Ray Data actors (engine=ray): the same images for the
same seed; a rerun skips what is written. Unset sampling keys are the checkpoint's own."""

from __future__ import annotations

import sys

from ..config import SAMPLING_KEYS, GenerateConfig, compose, from_dict
from ..core.errors import ConfigError
from . import key_flags, run_stage

# every key of the command is also a flag (the seed's `--transformer_ckpt …`); a sampling
# setting's flag is its key under sample: (`--temperature 0.8` is `sample.temperature=0.8`)
ALIASES = {f: k for f, k in key_flags(GenerateConfig).items() if k != "sample"} | \
    {f"--{k}": f"sample.{k}" for k in SAMPLING_KEYS}
SAMPLE_KEYS = tuple(f"sample.{k}" for k in SAMPLING_KEYS)  # an untyped mapping: Hydra parses their values


def sample_override(override: str) -> str:
    """`sample.<key>=v`: only the keys a person sets are in `sample` (the rest are the
    checkpoint's), so each is added to it (Hydra's `++`); top_k 0 means off, as before."""
    key, _, value = override.partition("=")
    if key.removeprefix("sample.") not in SAMPLING_KEYS:
        raise ConfigError(f"{key}: not a key of this command; one of: "
                          f"{', '.join(f'sample.{k}' for k in SAMPLING_KEYS)} (and `--print-config` shows the rest)")
    return f"++{key}={'null' if key == 'sample.top_k' and value.strip() == '0' else value}"


def build(config_name: str, overrides: list[str], config_dir: str) -> GenerateConfig:
    overrides = [sample_override(o) if o.startswith("sample.") else o for o in overrides]
    return from_dict(GenerateConfig, compose(config_name, overrides, config_dir))


def main(argv=None) -> int:
    from ..stages.generate import run_generate

    return run_stage(GenerateConfig, lambda cfg, config_name: run_generate(cfg), __doc__.splitlines()[0],
                     "generate/base", argv, build=build, aliases=ALIASES, switches=("--allow_mismatch",),
                     parsed=SAMPLE_KEYS)


if __name__ == "__main__":
    sys.exit(main())
