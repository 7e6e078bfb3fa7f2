"""arplatform: autoregressive transformers on discrete image codes.

The public names users know from the seed live here whatever the inner layout.
Importing the package imports torch only; Ray, MLflow and Hydra load in the
entry points that use them.
"""

from .core import (
    GPT,
    CheckpointError,
    CodeSequenceDataset,
    DataError,
    GPTConfig,
    OptimConfig,
    TokenLayout,
    TrainConfig,
    codes_from_sequences,
    generate_autoregressive,
    load_checkpoint,
    load_model,
    pad_collate,
    sample_next_token,
    save_checkpoint,
)
from .core.decode import decode_codes_to_images

__all__ = [
    "GPT", "GPTConfig", "TokenLayout", "CodeSequenceDataset", "pad_collate", "sample_next_token",
    "generate_autoregressive", "codes_from_sequences", "save_checkpoint", "load_checkpoint",
    "load_model", "OptimConfig", "TrainConfig", "DataError", "CheckpointError", "decode_codes_to_images",
]
