"""What a training job's config and its checked data (`DataFacts`) imply: the model, the
context windows, the steps (`plan_training`). The driver calls it to refuse a job that cannot
run; every worker calls it again on its own config, so each Tune trial plans its own."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.data import window_starts
from ..core.errors import ConfigError
from ..core.model import GPTConfig
from ..core.tokens import TokenLayout
from . import TrainJobConfig


@dataclass
class DataFacts:
    """What the driver learned from the code files (plain data; travels to workers as a dict)."""

    layout: TokenLayout
    grid_shape: tuple[int, int]
    num_positions: int  # codes per image
    num_train: int = 0  # rows after the invalid-code policy
    num_val: int = 0
    codebook_pt: str | None = None  # absolute; checkpoints record it, so `generate` finds codebook and VAE
    # the identities checkpoints record, so `generate` refuses another codebook or VAE of the same shape
    codebook_sha256: str | None = None
    vae_sha256: str | None = None

    def to_dict(self) -> dict:
        return {"layout": self.layout.to_dict(), "grid_shape": list(self.grid_shape),
                "num_positions": self.num_positions, "num_train": self.num_train, "num_val": self.num_val,
                "codebook_pt": self.codebook_pt, "codebook_sha256": self.codebook_sha256,
                "vae_sha256": self.vae_sha256}

    @classmethod
    def from_dict(cls, d: dict) -> DataFacts:
        return cls(TokenLayout.from_dict(d["layout"]), tuple(d["grid_shape"]), int(d["num_positions"]),
                   int(d["num_train"]), int(d["num_val"]), d.get("codebook_pt"), d.get("codebook_sha256"),
                   d.get("vae_sha256"))

    def identity(self) -> dict:
        """What a checkpoint and run.json record of the codebook and VAE the run trained with."""
        return {"codebook_pt": self.codebook_pt, "codebook_sha256": self.codebook_sha256,
                "vae_sha256": self.vae_sha256}


@dataclass
class TrainPlan:
    model: GPTConfig
    windows: int  # training windows per sequence (1 when the sequence fits the context)
    rows_per_worker: int
    steps_per_epoch: int  # optimizer steps of every worker per epoch

    @property
    def seq_len(self) -> int:
        return self.model.seq_len


def torch_threads(job: TrainJobConfig, workers_on_node: int) -> int:
    """Torch threads of one worker: `trainer.threads_per_worker`, else the node's cores shared out."""
    return job.trainer.threads_per_worker or max(1, (os.cpu_count() or 1) // workers_on_node)


def plan_training(job: TrainJobConfig, facts: DataFacts, num_workers: int) -> TrainPlan:
    """The model config, windows and steps of `job` on data `facts` over `num_workers` workers."""
    layout = facts.layout
    inputs = layout.sequence_length(facts.num_positions) - 1  # a sequence's inputs: all but its last token
    seq_len = min(job.model.seq_len or inputs, inputs)
    model = job.model.gpt_config(layout.vocab_size, seq_len)
    windows = len(window_starts(inputs, seq_len))
    rows = facts.num_train // num_workers  # Ray's streaming split gives every worker an equal share
    micro_batches = rows * windows // job.optim.batch_size
    steps = micro_batches // job.optim.grad_accum_steps
    if steps == 0:
        raise ConfigError(
            f"optim.batch_size: {facts.num_train} training sequences ({windows} window(s) each) over "
            f"{num_workers} workers give no full step of {job.optim.batch_size} × {job.optim.grad_accum_steps} "
            "accumulation; lower optim.batch_size, optim.grad_accum_steps or trainer.num_workers")
    return TrainPlan(model, windows, rows, steps)
