"""What a config folder may hold, checked before Hydra reads it, and an `oc.env` that refuses.

Hydra would construct whatever a `--config-dir` says: `!!python/…` tags, aliases that expand
to 10^7 leaves, `${oc.env:…}` built from other keys. So each file is read as a node graph
first (nothing constructed), its size bounded and its tags checked."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

from ..core.errors import ConfigError

MAX_FILE_BYTES = 1 << 20  # a config file larger than this is refused unread
MAX_FILES = 2000  # YAML files under one config folder
MAX_NODES = 100_000  # a file's nodes with every alias expanded (the largest shipped config has < 100)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def check_config_name(config_name: str) -> None:
    """`group/name`: plain path segments only, so a name never leaves its config folder."""
    if not isinstance(config_name, str) or not NAME.fullmatch(config_name) or ".." in config_name.split("/"):
        raise ConfigError(f"--config-name {config_name!r}: a config name is group/name made of letters, digits, "
                          "'_', '-' and '.', with no '..' (it may not leave the config folder)")


def check_config_dir(config_dir: str) -> None:
    """Every YAML file under `config_dir`: bounded in bytes and expanded nodes, standard tags only."""
    if not os.path.isdir(config_dir):
        raise ConfigError(f"--config-dir {config_dir}: no such folder")
    files = [os.path.join(folder, f) for folder, _, names in os.walk(config_dir) for f in sorted(names)
             if f.endswith((".yaml", ".yml"))]
    if len(files) > MAX_FILES:
        raise ConfigError(f"--config-dir {config_dir}: {len(files)} YAML files, more than {MAX_FILES}")
    for path in files:
        check_config_file(path)


def check_config_file(path: str) -> None:
    import yaml

    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {os.path.getsize(path)} bytes, more than a config file may be ({MAX_FILE_BYTES})")
    try:
        with open(path, encoding="utf-8") as f:
            nodes = list(yaml.compose_all(f, Loader=yaml.SafeLoader))  # the node graph: nothing constructed
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    sizes: dict[int, int] = {}
    for node in nodes:
        if node is not None and expanded_size(node, sizes, path) > MAX_NODES:
            raise ConfigError(f"{path}: expands to more than {MAX_NODES} nodes (YAML aliases); refused")


def expanded_size(node, sizes: dict[int, int], path: str) -> int:
    """Nodes under `node` with every alias expanded, each distinct node counted once in time
    (`sizes` memoises by identity); a non-standard tag (`!!python/…`) is refused on the way."""
    import yaml

    if id(node) in sizes:
        return sizes[id(node)]
    if not node.tag.startswith("tag:yaml.org,2002:") or "python" in node.tag:
        raise ConfigError(f"{path}: the tag {node.tag!r} is not allowed in a config (plain YAML values only)")
    sizes[id(node)] = MAX_NODES + 1  # a cycle (an alias inside itself) counts as too large
    children = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    total = 1
    for child in children:
        total += expanded_size(child, sizes, path)
        if total > MAX_NODES:
            break
    sizes[id(node)] = total
    return total


def refuse_environment(*_args, **_kwargs):
    raise ConfigError("${oc.env:…} is refused (configs are printed and logged to MLflow, so a secret would be "
                      "too); pass the value as key=value, or leave credentials in the environment, where the "
                      "platform reads them")


@contextmanager
def no_environment_resolver():
    """`oc.env` refuses while the block composes and resolves a config, whatever interpolation
    (nested, decoded, from an override) builds the call; OmegaConf's own is put back after."""
    from omegaconf import OmegaConf
    from omegaconf.resolvers import oc

    OmegaConf.register_new_resolver("oc.env", refuse_environment, replace=True)
    try:
        yield
    finally:
        OmegaConf.register_new_resolver("oc.env", oc.env, replace=True)
