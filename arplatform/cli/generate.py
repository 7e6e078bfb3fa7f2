"""arplatform generate transformer_ckpt=… [vae_ckpt=…] [codebook_pt=…] [key=value …]
(python -m arplatform generate --transformer_ckpt … [--vae_ckpt …] [--codebook_pt …] [--key value …])

Samples images from a trained GPT: codes with the KV cache, decoded through the
codebook and the VAE. --codebook_pt defaults to the codebook the checkpoint was
trained on, --vae_ckpt to the VAE that codebook names. --engine ray spreads the
work over Ray Data actors (also under `ray job submit`); both engines give the same
images for the same --seed. Rerunning a command skips the samples already written.
"""

from __future__ import annotations

import argparse
import sys

from ..config import SAMPLING_KEYS, GenerateConfig, SampleConfig, from_dict
from . import ArgumentParser, exit_code, overrides_as_flags


def parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The flags, and {key: flag} for the `key=value` style (`sample.temperature=0.8` too)."""
    d, s = GenerateConfig(), SampleConfig()  # the defaults shown in --help are the config's own
    p = ArgumentParser(description=__doc__.splitlines()[0])
    flags = {}

    def add(name: str, **kw):
        p.add_argument(f"--{name}", **kw)
        flags[f"sample.{name}" if name in SAMPLING_KEYS else name] = f"--{name}"

    add("transformer_ckpt", default=d.transformer_ckpt,
        help="GPT checkpoint (best.pt), or an MLflow model: models:/<name>/<version>, runs:/<run_id>/model")
    add("vae_ckpt", default=None, help="VAE checkpoint (default: the one the codebook names)")
    add("codebook_pt", default=None, help="codebook.pt (default: the one the checkpoint trained on)")
    add("num_samples", type=int, default=d.num_samples)
    add("classes", default=d.classes, help="all (balanced), none (unconditional) or e.g. 3,5,7")
    own = "default: the checkpoint's own (its training config's sample:, its sampler.json), else"
    add("temperature", type=float, default=None, help=f"{own} {s.temperature}")
    add("top_k", type=int, default=None, help=f"{own} {s.top_k}; 0 = off")
    add("top_p", type=float, default=None, help=f"{own} {s.top_p} (off)")
    add("cfg_scale", type=float, default=None, help=f"{own} {s.cfg_scale}")
    add("precision", default=None, help=f"auto | fp32 | bf16 ({own} {s.precision})")
    add("seed", type=int, default=d.seed)
    add("batch_size", type=int, default=d.batch_size)
    add("out", default=None, help="samples folder (default <output_root>/samples/<config>)")
    add("output_root", default=d.output_root)
    add("engine", default=d.engine, help="local | ray")
    add("actors", type=int, default=d.actors, help="Ray engine: actors")
    add("cpus_per_actor", type=float, default=d.cpus_per_actor)
    add("use_gpu", default=d.use_gpu, help="auto | true | false (Ray engine)")
    add("device", default=d.device, help="local engine: auto | cpu | cuda[:i]")
    add("stall_timeout_s", type=float, default=d.stall_timeout_s)
    add("format", default=d.format, help="png (a file per image) | tar (a tar of PNGs per batch) | npz")
    add("tracking_uri", default=None, help="MLflow store of a models:/… or runs:/… checkpoint (default: as training)")
    add("allow_mismatch", action="store_true", default=None,
        help="decode with a codebook or VAE other than those the checkpoint was trained with")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="the same settings in every command's style: transformer_ckpt=… sample.temperature=0.8")
    return p, flags


def parse(argv=None) -> dict:
    p, flags = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(p.parse_args(overrides_as_flags(argv, flags, switches=("allow_mismatch",))))
    args.pop("overrides")  # (converted to flags above: in --help only)
    sample = {k: args.pop(k) for k in SAMPLING_KEYS}
    sample = {k: v for k, v in sample.items() if v is not None}
    if sample.get("top_k") == 0:
        sample["top_k"] = None
    return {k: v for k, v in args.items() if v is not None} | {"sample": sample}


def main(argv=None) -> int:
    values = {}
    if code := exit_code(lambda: values.update(parse(argv))):
        return code  # an unknown key=value: one line

    def generate():
        from ..stages.generate import run_generate

        # `sample` holds the flags given only: run_generate puts them over the checkpoint's own
        run_generate(from_dict(GenerateConfig, values))

    return exit_code(generate)


if __name__ == "__main__":
    sys.exit(main())
