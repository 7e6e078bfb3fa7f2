"""Batch generation on Ray Data: a materialised dataset of (index, label) rows, mapped by
`ImageSampler` actors that each load the GPT, codebook and VAE once and write their
batches straight into the samples folder.

Resources: one GPU per actor when the cluster has GPUs (`use_gpu=auto`), else
`cpus_per_actor` CPUs; the input is materialised (`from_numpy`), so no read task
competes with the actors for CPUs. A pipeline that makes no progress for
`stall_timeout_s` fails with one line instead of Ray Data's default 30 minutes.
"""

from __future__ import annotations

import time

import numpy as np


def actor_resources(ray, cfg) -> dict:
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = cfg.use_gpu == "true" or (cfg.use_gpu == "auto" and gpus >= 1)
    if use_gpu and gpus < cfg.actors:
        from ..errors import ConfigError

        raise ConfigError(f"actors: {cfg.actors} GPU actors but the cluster has {gpus:g} GPUs; lower actors "
                          "or pass --use_gpu false")
    cpus = ray.cluster_resources().get("CPU", 0)
    if not use_gpu and cfg.actors * cfg.cpus_per_actor > cpus:
        from ..errors import ConfigError

        raise ConfigError(f"actors: {cfg.actors} actors × {cfg.cpus_per_actor:g} CPU = "
                          f"{cfg.actors * cfg.cpus_per_actor:g} CPUs but the cluster has {cpus:g}; lower actors "
                          "or cpus_per_actor")
    return {"num_gpus": 1} if use_gpu else {"num_cpus": cfg.cpus_per_actor}


def sample_on_actors(ray, cfg, spec: dict, todo: np.ndarray, labels: np.ndarray, log) -> list[str]:
    """Draw `todo` on the actors; returns the Ray node ids the batches were drawn on."""
    import ray.data
    from ray.data.exceptions import ExecutionTimeoutError

    from ..errors import GenerationError
    from ..image_sampler import ImageSampler

    resources = actor_resources(ray, cfg)
    threads = max(1, int(resources.get("num_cpus", 1)))  # torch threads = the CPUs the actor holds
    spec = dict(spec, threads=threads, device="cuda" if "num_gpus" in resources else "cpu")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = cfg.stall_timeout_s
    # every actor has loaded its models before the first batch is handed out: the batches spread
    # over all of them (and all nodes), and a pool that cannot start fails within the same bound
    ctx.wait_for_min_actors_s = max(1, int(cfg.stall_timeout_s))
    batch_size = min(cfg.batch_size, -(-len(todo) // cfg.actors))  # a small job still reaches every actor
    blocks = max(1, -(-len(todo) // batch_size))
    rows = ray.data.from_items([{"index": int(i), "label": int(c)} for i, c in zip(todo, labels, strict=True)],
                               override_num_blocks=blocks)
    out = rows.map_batches(ImageSampler, fn_constructor_kwargs={"spec": spec}, batch_size=batch_size,
                           batch_format="numpy", compute=ray.data.ActorPoolStrategy(
                               size=cfg.actors, max_tasks_in_flight_per_actor=1), **resources)
    where = "GPU" if "num_gpus" in resources else f"{resources['num_cpus']:g} CPU"
    log(f"  {cfg.actors} actor(s), {where} each, batches of {batch_size}")
    t0, count, nodes = time.perf_counter(), 0, set()
    try:
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            count += len(batch["index"])
            nodes.update(str(n) for n in batch["node"])
            log(f"  {count}/{len(todo)} images, {count / (time.perf_counter() - t0):.1f} images/s")
    except ExecutionTimeoutError as e:
        raise GenerationError(f"generation stalled: no batch finished for {cfg.stall_timeout_s:g} s "
                              f"(stall_timeout_s); are the actors' resources free? ({e})") from None
    except ray.exceptions.GetTimeoutError:
        raise GenerationError(f"the {cfg.actors} actor(s) did not all start within {cfg.stall_timeout_s:g} s "
                              "(stall_timeout_s); are their resources free?") from None
    if count != len(todo):
        raise GenerationError(f"{spec['out']}: {count} of {len(todo)} images came back; rerun to draw the rest")
    log(f"  drawn on {len(nodes)} node(s)")
    return sorted(nodes)

