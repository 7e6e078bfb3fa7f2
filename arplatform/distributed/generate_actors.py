"""Batch generation on Ray Data: (index, label) rows mapped by `ImageSampler` actors (one GPU
each where there are GPUs), each writing its batches into the samples folder. The input is
materialised, so no read task competes for CPUs; no progress for `stall_timeout_s` fails."""

from __future__ import annotations

import numpy as np

from ..core.progress import Progress

# What one sampling actor's process holds before its models: Python, torch, Ray's worker
# (measured: 40 CPU actors of the MNIST checkpoint took 12.6 GB, about 300 MiB each).
ACTOR_PROCESS_BYTES = 300 * 2**20


def actor_memory_bytes(models: dict, batch_size: int, guided: bool) -> int:
    """About how much memory one actor takes: its process, its models, one batch's sampling."""
    from ..core.sampling import sampling_memory_bytes

    batch = sampling_memory_bytes(models["model_config"], batch_size, guided, models["image_pixels"])
    return ACTOR_PROCESS_BYTES + models["weights_bytes"] + batch


def actor_resources(ray, cfg, memory_per_actor: int) -> dict:
    """One GPU per actor where there are GPUs, else `cpus_per_actor` CPUs and their memory;
    refused in one line when the pool can never be placed."""
    from ..core.budget import check_fits, gets_gpus

    total = ray.cluster_resources()
    use_gpu = gets_gpus(cfg.use_gpu, total)
    if use_gpu:
        check_fits("actors", f"{cfg.actors} GPU actors", cfg.actors, total.get("GPU", 0), "GPU",
                   "lower actors or pass --use_gpu false")
        return {"num_gpus": 1}
    check_fits("actors", f"{cfg.actors} actors × {cfg.cpus_per_actor:g} CPU", cfg.actors * cfg.cpus_per_actor,
               total.get("CPU", 0), "CPU", "lower actors or cpus_per_actor")
    fit = int(total.get("memory", 0) // memory_per_actor)
    check_fits("actors", f"{cfg.actors} actors × {memory_per_actor / 2**20:.0f} MiB (process, models, a batch)",
               cfg.actors * memory_per_actor, total.get("memory", 0), "memory",
               f"at most {fit} actors fit; lower actors or batch_size")
    # each actor is a process that computes: more of them than the cluster's cores only queue for
    # the same cores (and start slowly), whatever fraction of a CPU each asks Ray for
    cores = int(total.get("CPU", 0))
    check_fits("actors", f"{cfg.actors} actor processes", cfg.actors, cores, "CPU",
               f"at most one per core ({cores}); lower actors")
    return {"num_cpus": cfg.cpus_per_actor, "memory": memory_per_actor}


def sample_on_actors(ray, cfg, spec: dict, todo: np.ndarray, labels: np.ndarray, memory_per_actor: int,
                     log) -> list[str]:
    """Draw `todo` on the actors; returns the Ray node ids the batches were drawn on."""
    from ray.data.exceptions import ExecutionTimeoutError

    from ..core.errors import GenerationError
    from .cluster import data_context, user_error_in

    resources = actor_resources(ray, cfg, memory_per_actor)
    threads = max(1, int(resources.get("num_cpus", 1)))  # torch threads = the CPUs the actor holds
    spec = dict(spec, threads=threads, device="cuda" if "num_gpus" in resources else "cpu")
    # every actor has loaded its models before the first batch is handed out: the batches spread
    # over all of them (and all nodes), and a pool that cannot start fails within the same bound
    with data_context(execution_no_progress_timeout_s=cfg.stall_timeout_s,
                      wait_for_min_actors_s=max(1, int(cfg.stall_timeout_s))):
        out, batch_size = actor_pipeline(cfg, spec, todo, labels, resources)
        where = "GPU" if "num_gpus" in resources else f"{resources['num_cpus']:g} CPU"
        log(f"  {cfg.actors} actor(s), {where} each, batches of {batch_size}")
        nodes, progress = set(), Progress("generate", len(todo), "images", log)
        try:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                refusals = [r for r in batch["refused"] if r]
                if refusals:
                    raise user_error_in(RuntimeError(str(refusals[0])))
                progress.update(len(batch["index"]))
                nodes.update(str(n) for n in batch["node"])
            progress.close()
        except ExecutionTimeoutError as e:
            raise GenerationError(f"generation stalled: no batch finished for {cfg.stall_timeout_s:g} s "
                                  f"(stall_timeout_s); are the actors' resources free? ({e})") from None
        except ray.exceptions.GetTimeoutError:
            raise GenerationError(f"the {cfg.actors} actor(s) did not all start within {cfg.stall_timeout_s:g} s "
                                  "(stall_timeout_s); are their resources free?") from None
        except Exception as e:  # an actor refused its input (a checkpoint changed meanwhile): that one line
            refused = user_error_in(e)
            if refused is None:
                raise
            raise refused from None
    if progress.done != len(todo):
        raise GenerationError(f"{spec['out']}: {progress.done} of {len(todo)} images came back; rerun to draw the rest")
    log(f"  drawn on {len(nodes)} node(s)")
    return sorted(nodes)


class RefusingSampler:
    """`ImageSampler` whose refusal (a file changed since the driver checked it) comes back as a
    `refused` row, not a dead actor's traceback."""

    def __init__(self, spec: dict):
        from ..core.errors import USER_ERRORS
        from .image_sampler import ImageSampler

        self.sampler, self.refused = None, None
        try:
            self.sampler = ImageSampler(spec)
        except USER_ERRORS as e:
            self.refused = f"{type(e).__name__}: {e}"

    def __call__(self, batch: dict) -> dict:
        if self.refused is not None:  # one row that says so (the same columns as a drawn batch)
            return {"index": np.array([-1]), "label": np.array([-1]), "node": np.array([""], dtype=object),
                    "refused": np.array([self.refused], dtype=object)}
        drawn = self.sampler(batch)
        return drawn | {"refused": np.full(len(drawn["index"]), "", dtype=object)}


def actor_pipeline(cfg, spec: dict, todo: np.ndarray, labels: np.ndarray, resources: dict):
    """The dataset of (index, label) rows mapped by `ImageSampler` actors, and its batch size."""
    import ray.data

    batch_size = min(cfg.batch_size, -(-len(todo) // cfg.actors))  # a small job still reaches every actor
    blocks = max(1, -(-len(todo) // batch_size))
    rows = ray.data.from_items([{"index": int(i), "label": int(c)} for i, c in zip(todo, labels, strict=True)],
                               override_num_blocks=blocks)
    out = rows.map_batches(RefusingSampler, fn_constructor_kwargs={"spec": spec}, batch_size=batch_size,
                           batch_format="numpy", compute=ray.data.ActorPoolStrategy(
                               size=cfg.actors, max_tasks_in_flight_per_actor=1), **resources)
    return out, batch_size

