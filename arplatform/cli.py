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

from .config import CONFIG_DIR, compose, from_dict
from .errors import USER_ERRORS


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
