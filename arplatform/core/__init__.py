"""The platform's core in plain PyTorch: no Ray, MLflow or Hydra in here."""

from .checkpoint import load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from .data import CodeSequenceDataset, encode_sequences, load_codes, load_labels, make_examples, pad_collate
from .errors import CheckpointError, DataError
from .loop import GPTObjective, OptimConfig, TrainConfig, evaluate, fit
from .model import GPT, GPTConfig
from .sampling import codes_from_sequences, generate_autoregressive, sample_next_token
from .tokens import TokenLayout

__all__ = [
    "GPT", "GPTConfig", "TokenLayout", "CodeSequenceDataset", "pad_collate", "encode_sequences",
    "make_examples", "load_codes", "load_labels", "sample_next_token", "generate_autoregressive",
    "codes_from_sequences", "save_checkpoint", "load_checkpoint", "load_model",
    "model_from_checkpoint", "OptimConfig", "TrainConfig", "GPTObjective", "fit", "evaluate", "DataError",
    "CheckpointError",
]
