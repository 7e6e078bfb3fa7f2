"""A sweep's search space: parsed from YAML, checked against the training job, turned into Tune's.

    space:
      model:
        embed_dim: {grid: [64, 128]}          every value, each in its own trials
        seq_len:   {choice: [null, 24]}       one value drawn per trial
      optim:
        lr:        {loguniform: [3.0e-4, 3.0e-3]}
        dropout:   {uniform: [0.0, 0.2]}

A leaf names a key of the training job. Every value a trial can draw is checked before Ray
starts, as a whole training job planned on the checked data.
"""

from __future__ import annotations

import copy
import itertools
import math
import typing
from dataclasses import dataclass

from ..core.errors import ConfigError
from . import TrainJobConfig, from_dict

KINDS = ("grid", "choice", "uniform", "loguniform")
SWEEPABLE_SECTIONS = ("model", "optim")
MAX_CHECKED_COMBINATIONS = 4096


@dataclass(frozen=True)
class Axis:
    key: str  # dotted key of the training job, e.g. "model.embed_dim"
    kind: str
    values: tuple  # grid/choice: the values; uniform/loguniform: (low, high)


def parse_space(space: dict, path: str = "space", sections=SWEEPABLE_SECTIONS) -> list[Axis]:
    """Nested mapping → axes; a leaf is a one-key mapping {kind: list}; keys of `sections` only."""
    axes = []
    for name, value in space.items():
        where = f"{path}.{name}"
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"{where}: expected a mapping ending in {{{'|'.join(KINDS)}: [...]}}, got {value!r}")
        if set(value) & set(KINDS):
            axes.append(_axis(where, value, sections))
        else:
            axes.extend(parse_space(value, where, sections))
    return axes


def _axis(where: str, leaf: dict, sections) -> Axis:
    if len(leaf) != 1:
        raise ConfigError(f"{where}: one of {', '.join(KINDS)} per key, got {', '.join(map(str, leaf))}")
    ((kind, values),) = leaf.items()
    key = where.split(".", 1)[1]
    if key.split(".")[0] not in sections or key.count(".") != 1:
        raise ConfigError(f"{where}: only keys of {' and '.join(sections)} can be swept "
                          f"(e.g. space.{sections[0]}.<key>)")
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {values!r}")
    if kind in ("uniform", "loguniform"):
        ok = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(v) for v in values) and values[0] < values[1]
        if not ok or (kind == "loguniform" and values[0] <= 0):
            low = "0 <" if kind == "loguniform" else ""
            raise ConfigError(f"{where}.{kind}: expected [low, high] with {low} low < high, got {values!r}")
    return Axis(key, kind, tuple(values))


def apply_params(job: dict, params: dict) -> dict:
    """A copy of the training job's dict with each dotted key of `params` set."""
    job = copy.deepcopy(job)
    for key, value in params.items():
        section, name = key.split(".")
        job[section][name] = value
    return job


def check_space(axes: list[Axis], job: dict, check_plan=None) -> None:
    """Every value any trial can draw makes a valid config (and `check_plan(job)` passes): a
    training sweep's jobs, a sampler sweep's `sample:` keys (checked as a training job's)."""
    candidates = [a.values for a in axes]  # ranges: both ends
    combos = itertools.product(*candidates)
    for values in itertools.islice(combos, MAX_CHECKED_COMBINATIONS):
        params = {a.key: int(v) if a.kind in ("uniform", "loguniform") and is_integer_key(a.key) else v
                  for a, v in zip(axes, values, strict=True)}
        try:
            trial = from_dict(TrainJobConfig, apply_params(job, params))
            if check_plan is not None:
                check_plan(trial)
        except ConfigError as e:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"space: the trial {shown} is refused: {e}") from None


def is_integer_key(key: str) -> bool:
    """Whether the training job declares `key` an integer (its ranges then draw integers)."""
    section, name = key.split(".")
    section_type = typing.get_type_hints(TrainJobConfig)[section]
    hint = typing.get_type_hints(section_type).get(name)
    return hint is int or int in typing.get_args(hint)


MAX_TRIALS = 10_000  # a sweep larger than this is a typo, not a plan: refused before Ray starts


def check_trial_count(axes: list[Axis], samples: int, key: str) -> int:
    """The sweep's trial count (`samples` × every grid's points, as Tune expands them), refused
    in one line above MAX_TRIALS."""
    trials = samples * math.prod(len(a.values) for a in axes if a.kind == "grid")
    if trials > MAX_TRIALS:
        grids = " × ".join(f"{len(a.values)} ({a.key})" for a in axes if a.kind == "grid")
        raise ConfigError(f"{key}: {samples} × the grid's {grids} = {trials:,} trials; at most {MAX_TRIALS:,} — "
                          f"lower {key} or the grid")
    return trials


def tune_domains(axes: list[Axis]) -> dict:
    """Tune's param_space: {dotted key: domain}."""
    from ray import tune

    space = {}
    for a in axes:
        integer = is_integer_key(a.key)
        if a.kind == "grid":
            space[a.key] = tune.grid_search(list(a.values))
        elif a.kind == "choice":
            space[a.key] = tune.choice(list(a.values))
        elif a.kind == "uniform":
            space[a.key] = tune.randint(int(a.values[0]), int(a.values[1]) + 1) if integer \
                else tune.uniform(*a.values)
        else:
            space[a.key] = tune.lograndint(int(a.values[0]), int(a.values[1]) + 1) if integer \
                else tune.loguniform(*a.values)
    return space
