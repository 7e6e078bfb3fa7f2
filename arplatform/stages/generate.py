"""The generation stage: a checkpoint → N images (`jobs.generation.run_generate`, which the
training job's end-of-training samples share)."""

from ..jobs.generation import run_generate

__all__ = ["run_generate"]
