"""Shared command-line plumbing: Hydra composition without Hydra's side effects.

`python -m arplatform.<stage> --config-name group/name key=value …` composes
`configs/group/name.yaml` (with its defaults list) and the overrides through
Hydra's compose API, so Hydra never changes the working directory or writes
`outputs/` folders; the result becomes a typed config (`config.from_dict`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

from .config import from_dict
from .errors import USER_ERRORS, ConfigError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def compose(config_name: str, overrides: list[str], config_dir: str = CONFIG_DIR) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not os.path.exists(os.path.join(config_dir, config_name + ".yaml")):
        group = os.path.dirname(config_name)
        names = sorted(f[:-5] for f in os.listdir(os.path.join(config_dir, group)) if f.endswith(".yaml")
                       and f != "base.yaml") if os.path.isdir(os.path.join(config_dir, group)) else []
        raise ConfigError(f"{config_dir}/{config_name}.yaml: no such config; available in {group or '.'}: "
                          f"{', '.join(names)}")
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(" ".join(str(e).split())) from e


def parse_args(description: str, default_config: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config-name", default=default_config, help="configs/<group>/<name> without .yaml")
    p.add_argument("--config-dir", default=CONFIG_DIR,
                   help="the folder --config-name is in (default: the project's configs/; e.g. a sweep's "
                        "folder for its best.yaml)")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.add_argument("overrides", nargs="*", help="key=value overrides (Hydra syntax)")
    return p.parse_args(argv)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (`ray job stop`, a scheduler) unwinds like Ctrl-C, so a stage can mark its
    runs KILLED and clean up instead of vanishing mid-write."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def exit_code(run: Callable[[], object]) -> int:
    """run(); 0 if it returns, 2 with one line on stderr if it raises a user error
    (`errors.USER_ERRORS`: the message names the key or file), 130 if interrupted."""
    _interrupt_on_sigterm()
    try:
        run()
    except USER_ERRORS as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run_stage(cls, run: Callable, description: str, default_config: str, argv=None,
              build: Callable | None = None) -> int:
    """Compose → typed config → run(config). Bad input: one line on stderr, exit 2.
    `build(config_name, overrides, config_dir)` replaces the plain composition (a sweep
    composes its training job too)."""
    args = parse_args(description, default_config, argv)
    config_name, overrides, print_only = args.config_name, args.overrides, args.print_config

    def stage():
        if build is not None:
            config = build(config_name, overrides, os.path.abspath(args.config_dir))
        else:
            config = from_dict(cls, compose(config_name, overrides, os.path.abspath(args.config_dir)))
        if print_only:
            import yaml

            from .config import to_dict

            print(yaml.safe_dump(to_dict(config), sort_keys=False))
        else:
            run(config, config_name=config_name)

    return exit_code(stage)
