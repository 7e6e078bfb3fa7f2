"""The tokenizer's VAE data-parallel on Ray Train (`tokenize engine=ray`): the core loop under
DDP, each worker on a seeded share of the images; rank 0 reports best.pt and last.pt each epoch."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..core.io import scratch_dir
from ..core.loop import IndexBatches, OptimConfig, fit
from ..core.vae import VAE, VAEConfig, VAEObjective
from .image_source import ImageReader
from .train_worker import all_reduce, epoch_reporter

VAE_VAL_IMAGES = 4096  # held-out images every worker scores each epoch (the first of the split)


def my_share(n: int, rank: int, world: int, seed: int) -> np.ndarray:
    """This rank's rows of a seeded permutation of n: every rank the same count (equal steps)."""
    rows = n // world
    return np.sort(np.random.default_rng(seed).permutation(n)[rank * rows : (rank + 1) * rows])


def vae_worker(config: dict) -> dict:
    """config: model (VAEConfig fields), train (OptimConfig fields), beta, recon_loss, seed,
    threads, run_config, and object refs of the train and val images."""
    import ray
    import ray.train
    import ray.train.torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    torch.manual_seed(config["seed"])  # the same initial weights on every rank
    model_cfg = VAEConfig(**config["model"])
    model = ray.train.torch.prepare_model(VAE(model_cfg))
    train_images, val_images = ImageReader(config["train_images"]), ImageReader(config["val_images"])
    share = my_share(len(train_images), rank, world, config["seed"])  # decoded here when they are files
    train = IndexBatches({"images": train_images.rows(share)}, config["train"]["batch_size"],
                         seed=config["seed"] + rank)
    # every rank scores the whole held-out set: the all-reduced mean is the same, and a held-out
    # set smaller than the number of workers leaves none of them empty
    val = IndexBatches({"images": torch.from_numpy(val_images.read())}, 512, shuffle=False, drop_last=False)

    def show(metrics: dict, step: int) -> None:
        if "train/loss" in metrics:
            print(f"vae step {step}/{config['train']['epochs'] * len(train)}: train loss/image "
                  f"{metrics['train/loss']:.2f}", flush=True)

    with scratch_dir("vae-checkpoints") as checkpoint_dir:  # (one a killed worker left is removed by the next)
        final = fit(model, VAEObjective(config["beta"], config["recon_loss"]), train, len(train), val,
                    OptimConfig(**config["train"]), device=device, checkpoint_dir=checkpoint_dir,
                    grid_shape=(model_cfg.grid_size,) * 2, run_config=config["run_config"],
                    callback=show if rank == 0 else None, on_epoch_end=epoch_reporter(checkpoint_dir, rank),
                    reduce=all_reduce if world > 1 else None, is_main=rank == 0)
    return {"final": final, "world_size": world}
