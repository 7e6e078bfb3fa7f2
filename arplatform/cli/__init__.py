"""The one command line: `arplatform <command> --config-name group/name key=value …` composes
arplatform/configs/group/name.yaml and the overrides through Hydra's compose API (no change of
directory, no outputs/ folders) into a typed config."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable

from ..config import CONFIG_DIR, compose, from_dict
from ..core.errors import USER_ERRORS, ConfigError, Interrupted


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the platform's error style: one line on stderr, exit 2 (argparse prints
    its whole usage first)."""

    def error(self, message: str):
        print(f"error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(description: str, default_config: str, argv=None, epilog: str | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=description, epilog=epilog)
    p.add_argument("--config-name", default=default_config, help="<group>/<name> without .yaml (arplatform/configs/)")
    p.add_argument("--config-dir", default=CONFIG_DIR,
                   help="the folder --config-name is in (default: the project's arplatform/configs/; e.g. a sweep's "
                        "folder for its best.yaml)")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.add_argument("overrides", nargs="*", help="key=value overrides (Hydra syntax)")
    args = p.parse_args(argv)
    args.config_name = in_stage_group(args.config_name, default_config, args.config_dir)
    return args


def in_stage_group(config_name: str, default_config: str, config_dir: str) -> str:
    """`--config-name cifar10` to the tokenizer means tokenizer/cifar10: a bare name is the
    stage's own group's when the folder has no config of that name at its top."""
    group = os.path.dirname(default_config)
    if "/" in config_name or not group or os.path.exists(os.path.join(config_dir, config_name + ".yaml")):
        return config_name
    return f"{group}/{config_name}"


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
        sys.stdout.flush()  # a closed pipe (`--print-config | head`) shows here, not at exit
    except BrokenPipeError:  # the reader has all it wanted: no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    return 0


def run_stage(cls, run: Callable, description: str, default_config: str, argv=None,
              build: Callable | None = None, aliases: dict[str, str] | None = None,
              switches: tuple[str, ...] = (), parsed: tuple[str, ...] = ()) -> int:
    """Compose → typed config → run(config); bad input: one line, exit 2. `build` replaces the
    plain composition (a sweep composes its training job too); `aliases`: flags rewritten first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if aliases:
        rewritten = []
        if code := exit_code(lambda: rewritten.extend(flags_to_overrides(argv, aliases, switches, parsed))):
            return code
        argv = rewritten
    epilog = ("each flag is its key=value: " + ", ".join(f if k == f[2:] else f"{f} ({k})" for f, k in aliases.items())
              if aliases else None)
    args = parse_args(description, default_config, argv, epilog)
    config_name, overrides, print_only = args.config_name, args.overrides, args.print_config

    def stage():
        if build is not None:
            config = build(config_name, overrides, os.path.abspath(args.config_dir))
        else:
            config = from_dict(cls, compose(config_name, overrides, os.path.abspath(args.config_dir)))
        if print_only:
            import yaml

            from ..config import to_dict

            print(yaml.safe_dump(to_dict(config), sort_keys=False))
        else:
            run(config, config_name=config_name)

    return exit_code(stage)


# The one command: `arplatform <command> …` runs `main` of `arplatform/cli/<module>.py`.
COMMANDS = {
    "tokenize": ("tokenize", "images → VAE → codebook → integer codes (arplatform/configs/tokenizer/)"),
    "train": ("train", "a GPT on code sequences with Ray Train, tracked in MLflow (arplatform/configs/transformer/)"),
    "tune": ("tune", "sweep a training job's hyperparameters with Ray Tune (arplatform/configs/tune/)"),
    "tune-sampler": ("tune_sampler", "sweep a checkpoint's sampling settings (arplatform/configs/sampler_tune/)"),
    "generate": ("generate", "a checkpoint → images, here or on Ray Data actors"),
    "evaluate": ("evaluate", "a tokenizer folder (PSNR, SSIM) or a samples folder (accuracy, Fréchet, bits)"),
    "pipeline": ("pipeline", "the whole chain: tokenize → train → generate → evaluate → report"),
    "demo": ("demo", "the main job on the offline MNIST sample"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return ("usage: arplatform <command> [--config-name group/name] [key=value …]\n\n"
            "commands:\n" + "\n".join(lines) +
            "\n\n`arplatform <command> --help` for each; `python -m arplatform <command>` runs the same.")


def main(argv=None) -> int:
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"arplatform {version('arplatform')}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)} (arplatform --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"arplatform.cli.{COMMANDS[argv[0]][0]}")
    sys.argv[0] = f"arplatform {argv[0]}"  # what each command's --help calls itself
    return module.main(argv[1:])


# values Hydra's override grammar reads as they are (numbers, plain words, paths, URIs)
PLAIN_VALUE = re.compile(r"[\w.+\-/:@%]*", re.ASCII)


def hydra_value(value: str, parse: bool = False) -> str:
    """A flag's value quoted for Hydra, so it arrives as the shell's text (`--out 007` stays "007")
    and a typed key converts it; `parse` leaves a plain value to Hydra (an untyped mapping's key)."""
    if parse and PLAIN_VALUE.fullmatch(value):
        return value
    # inside quotes Hydra reads a backslash as an escape only before a quote or at the end
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value) + "'"


def key_flags(cls) -> dict[str, str]:
    """Every top-level key of a command's config as a flag of its own name (`--out` is `out`)."""
    import dataclasses

    return {f"--{f.name}": f.name for f in dataclasses.fields(cls)}


# the edge's own options: never rewritten
OPTIONS = ("--config-name", "--config-dir", "--print-config", "-h", "--help")


def flags_to_overrides(argv: list[str], aliases: dict[str, str], switches: tuple[str, ...] = (),
                       parsed: tuple[str, ...] = ()) -> list[str]:
    """The seed's flags rewritten at the edge: `--flag value` and `--flag=value` become
    `aliases[flag]=value` (`-` and `_` alike), a switch `key=true`; the edge's options and
    `key=value` pass; an unknown flag or any other word is a ConfigError."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        name = "--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag
        if flag in OPTIONS or not flag.startswith("-"):
            out.append(arg)
            if flag in ("--config-name", "--config-dir") and not eq and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
            elif not flag.startswith("-") and not eq:
                raise ConfigError(f"{arg}: expected key=value or --flag value")
        elif name in switches:
            out.append(f"{aliases[name]}={value or 'true'}")
        elif name in aliases:
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{flag}: expected a value")
                value = argv[i + 1]
                i += 1
            out.append(f"{aliases[name]}={hydra_value(value, aliases[name] in parsed)}")
        else:
            raise ConfigError(f"{flag}: not a flag of this command; one of: {', '.join(aliases)} (or key=value)")
        i += 1
    return out
