"""python -m arplatform.generate --transformer_ckpt … [--vae_ckpt …] [--codebook_pt …] [options]

Samples images from a trained GPT: codes with the KV cache, decoded through the
codebook and the VAE. --codebook_pt defaults to the codebook the checkpoint was
trained on, --vae_ckpt to the VAE that codebook names. --engine ray spreads the
work over Ray Data actors (also under `ray job submit`); both engines give the same
images for the same --seed. Rerunning a command skips the samples already written.
"""

from __future__ import annotations

import argparse
import sys

from .cli import exit_code
from .config import GenerateConfig, SampleConfig, from_dict

SAMPLER_FLAGS = ("temperature", "top_k", "top_p", "cfg_scale", "precision")


def parse(argv=None) -> dict:
    d = GenerateConfig()  # the defaults shown in --help are the config's own
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transformer_ckpt", default=d.transformer_ckpt, help="GPT checkpoint (best.pt)")
    p.add_argument("--vae_ckpt", default=None, help="VAE checkpoint (default: the one the codebook names)")
    p.add_argument("--codebook_pt", default=None, help="codebook.pt (default: the one the checkpoint trained on)")
    p.add_argument("--num_samples", type=int, default=d.num_samples)
    p.add_argument("--classes", default=d.classes, help="all (balanced), none (unconditional) or e.g. 3,5,7")
    s = SampleConfig()
    p.add_argument("--temperature", type=float, default=None, help=f"default {s.temperature}")
    p.add_argument("--top_k", type=int, default=None, help=f"default {s.top_k}; 0 = off")
    p.add_argument("--top_p", type=float, default=None, help=f"default {s.top_p} (off)")
    p.add_argument("--cfg_scale", type=float, default=None, help=f"default {s.cfg_scale}")
    p.add_argument("--precision", default=None, help=f"auto | fp32 | bf16 (default {s.precision})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--out", default=None, help="samples folder (default <output_root>/samples/<config>)")
    p.add_argument("--output_root", default=d.output_root)
    p.add_argument("--engine", default=d.engine, help="local | ray")
    p.add_argument("--actors", type=int, default=d.actors, help="Ray engine: actors")
    p.add_argument("--cpus_per_actor", type=float, default=d.cpus_per_actor)
    p.add_argument("--use_gpu", default=d.use_gpu, help="auto | true | false (Ray engine)")
    p.add_argument("--device", default=d.device, help="local engine: auto | cpu | cuda[:i]")
    p.add_argument("--stall_timeout_s", type=float, default=d.stall_timeout_s)
    p.add_argument("--allow_mismatch", action="store_true", default=None,
                   help="decode with a codebook or VAE other than those the checkpoint was trained with")
    args = vars(p.parse_args(argv))
    sample = {k: args.pop(k) for k in SAMPLER_FLAGS}
    sample = {k: v for k, v in sample.items() if v is not None}
    if sample.get("top_k") == 0:
        sample["top_k"] = None
    return {k: v for k, v in args.items() if v is not None} | {"sample": sample}


def main(argv=None) -> int:
    values = parse(argv)

    def generate():
        from .jobs.sampling import checkpoint_sampler_settings
        from .stages.generate import run_generate

        # defaults < the checkpoint's training config < its sampler.json (a sampler sweep) < the flags given
        settings = checkpoint_sampler_settings(values.get("transformer_ckpt", GenerateConfig.transformer_ckpt))
        if settings:
            print(f"sampling settings of this checkpoint (its training config, its sampler.json): {settings}; "
                  "flags given win")
        run_generate(from_dict(GenerateConfig, dict(values, sample={**settings, **values["sample"]})))

    return exit_code(generate)


if __name__ == "__main__":
    sys.exit(main())
