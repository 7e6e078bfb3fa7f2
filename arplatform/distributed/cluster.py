"""Starting or joining Ray with quiet logs and a stated CPU budget."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager

# Defaults for a readable console (each can be overridden from the environment):
# no Ray Data progress bars, one copy of each worker print, no per-report INFO lines,
# and a 0.5 s controller poll so per-epoch reports do not wait 2 s each.
QUIET_ENV = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_LOG_LEVEL": "WARNING",
    "RAY_TQDM": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # Structured worker logging off: no "Reporting training result …" line per rank per epoch.
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    # Python's default: Ray turns DeprecationWarnings on in its processes, and its own
    # internals then warn on every dataset split (ExecutionOptions.exclude_resources).
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


# what Ray Tune copies from the driver's environment into every trial's runtime_env
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


@contextmanager
def environment(set_vars: dict[str, str] | None = None, remove: tuple[str, ...] = ()):
    """This process's environment with `set_vars` set (where not set already) and `remove`
    taken out, for the block only; as it was afterwards."""
    saved = {k: os.environ.get(k) for k in (*(set_vars or {}), *remove)}
    for key in remove:
        os.environ.pop(key, None)
    for key, value in (set_vars or {}).items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def credentials_kept_from_trials():
    """AWS_* credentials out of this process's environment while a sweep runs: Tune copies them
    into each trial's runtime_env, which Ray logs in clear. Trials use their node's own."""
    return environment(remove=CREDENTIAL_VARS)


def quiet_env() -> dict[str, str]:
    """The quiet settings this environment does not set itself, for the job's runtime_env."""
    return {key: value for key, value in QUIET_ENV.items() if key not in os.environ}


def quiet_ray_logs() -> None:
    """Ray's loggers and Ray Data's progress output quiet in this process (a driver or a trial)."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # "Dataset … execution finished" per dataset
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


@contextmanager
def data_context(**settings):
    """Ray Data's process-wide DataContext with `settings` for the block, then as it was: a
    stall timeout chosen for one generate run does not outlive it."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = {key: getattr(ctx, key) for key in settings}
    for key, value in settings.items():
        setattr(ctx, key, value)
    try:
        yield ctx
    finally:
        for key, value in saved.items():
            setattr(ctx, key, value)


def init_ray(num_cpus: int | None = None):
    """Join the cluster named by RAY_ADDRESS (e.g. inside `ray job submit`), else start a
    local one; either way with the quiet settings above."""
    quiet_ray_logs()
    import ray

    if ray.is_initialized():
        return ray
    with own_sigterm_handler():
        # The quiet variables go with the job (its runtime_env): every worker, Train controller
        # and Tune trial of it has them, on a local cluster or a joined one; a submitted job's
        # runtime_env is merged with them by Ray.
        if os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level=logging.WARNING, runtime_env={"env_vars": quiet_env()})
        else:
            start_local_cluster(ray, num_cpus)
    return ray


@contextmanager
def own_sigterm_handler():
    """Keep the commands' SIGTERM handler (unwind like Ctrl-C: KILLED, exit 130) through
    ray.init, which replaces it twice (an exit 15, then a C++ crash handler that aborts)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        # only a handler someone installed (the commands' one): with none, Ray's own stay, and
        # they stop the local cluster's processes on SIGTERM
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def start_local_cluster(ray, num_cpus: int | None) -> None:
    """A local cluster whose workers are told its address (auto-detection fails when another Ray
    runs on the machine); metrics export off (no endpoints without a token) unless
    ARPLATFORM_RAY_METRICS=1."""
    system_config = {} if os.environ.get("ARPLATFORM_RAY_METRICS") == "1" else {"enable_metrics_collection": False}
    for _ in range(3):  # a chosen port can be taken before the dashboard binds it: choose again
        dashboard = f"127.0.0.1:{free_port()}"
        context = ray.init(num_cpus=num_cpus, logging_level=logging.WARNING, dashboard_host="127.0.0.1",
                           dashboard_port=int(dashboard.split(":")[1]), _system_config=system_config,
                           runtime_env={"env_vars": quiet_env() | {"RAY_API_SERVER_ADDRESS": f"http://{dashboard}"}})
        if not context.dashboard_url or context.dashboard_url.split("//")[-1] == dashboard:
            return
        ray.shutdown()
    raise RuntimeError(f"Ray's dashboard did not start on the port chosen for it ({context.dashboard_url})")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_cpu_budget(ray, num_workers: int, cpus_per_worker: float, use_gpu: bool) -> None:
    """Refuse a job that can never be scheduled instead of letting it hang silently."""
    from ..core.budget import check_fits

    total = ray.cluster_resources()
    check_fits("trainer", f"{num_workers} workers × {cpus_per_worker:g} CPU", num_workers * cpus_per_worker,
               total.get("CPU", 0), "CPU", "lower trainer.cpus_per_worker or trainer.num_workers")
    if use_gpu:
        check_fits("trainer", f"{num_workers} GPU workers", num_workers, total.get("GPU", 0), "GPU",
                   "set trainer.use_gpu=false or fewer workers")


def check_sweep_budget(ray, concurrent: int, trial_cpus: float, num_workers: int, cpus_per_worker: float,
                       use_gpu: bool) -> None:
    """Tune counts only a trial's own CPUs, not the Train workers it starts: a sweep whose
    concurrent trials cannot all get their workers would hang. Refuse it before any trial."""
    from ..core.budget import check_fits

    total = ray.cluster_resources()
    per_trial = trial_cpus + num_workers * cpus_per_worker
    check_fits("search.max_concurrent_trials",
               f"{concurrent} trials × ({trial_cpus:g} trial CPU + {num_workers} workers × {cpus_per_worker:g} CPU)",
               concurrent * per_trial, total.get("CPU", 0), "CPU",
               "lower search.max_concurrent_trials, trial_cpus, train.trainer.cpus_per_worker or "
               "train.trainer.num_workers")
    if use_gpu:
        check_fits("search.max_concurrent_trials", f"{concurrent} trials × {num_workers} GPU workers",
                   concurrent * num_workers, total.get("GPU", 0), "GPU",
                   "lower search.max_concurrent_trials or train.trainer.num_workers")


def user_error_in(error: BaseException):
    """The platform's user error a Ray task or actor raised, out of Ray's wrapping (an actor that
    died in its constructor has it only as text), or None."""
    import re

    from ..core import errors

    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, errors.USER_ERRORS):
            return e
    names = "|".join(cls.__name__ for cls in errors.USER_ERRORS)
    found = re.findall(rf"\b({names}): ([^\n]+)", str(error))
    if not found:
        return None
    name, message = found[-1]
    return getattr(errors, name)(message.strip())
