"""arplatform: autoregressive transformers on discrete image codes.

The seed's public names, loaded when first used: importing a submodule imports only what it
needs (a Ray Data task reading code rows starts without torch)."""

import importlib

# each public name, and the module that defines it
_PUBLIC = {
    **dict.fromkeys(("GPT", "GPTConfig"), ".core.model"),
    "TokenLayout": ".core.tokens",
    **dict.fromkeys(("CodeSequenceDataset", "pad_collate"), ".core.data"),
    **dict.fromkeys(("sample_next_token", "generate_autoregressive", "codes_from_sequences"), ".core.sampling"),
    **dict.fromkeys(("save_checkpoint", "load_checkpoint", "load_model"), ".core.checkpoint"),
    **dict.fromkeys(("OptimConfig", "TrainConfig"), ".core.loop"),
    **dict.fromkeys(("DataError", "CheckpointError"), ".core.errors"),
    "decode_codes_to_images": ".core.decode",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'arplatform' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name], __name__), name)


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
