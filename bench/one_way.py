"""How many ways the package says each thing (issue 37): counted in the source, so anyone can
rerun it on any commit and compare.

    cd bench && ../.venv/bin/python one_way.py [path/to/arplatform]

  command-line dialects  how the commands parse argv: `run_stage` (Hydra compose of a schema,
                         flags as aliases) or an argparse parser of a command's own
  sampling merges        functions that combine sampling settings from more than one source
                         (a call of `resolve_sampling`, the one merge, or a dict merge of
                         `sample` settings written out by hand)
  storage calls          calls of `storage.<function>(…)` (free functions on plain strings) in
                         modules below the commands, and "is this a bucket?" branches
                         (`is_uri(…)`) outside `outputs/storage.py`; handles made (`storage.Location(…)`,
                         `storage.Root(…)`: a path named once, its files by relative names below it)
                         are counted apart
  lines                  of the package's .py files
"""

from __future__ import annotations

import ast
import collections
import os
import sys


def python_files(package: str):
    for folder, _, files in os.walk(package):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, package), path


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            yield owner, name


def main() -> int:
    package = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "arplatform")
    lines, parsers, stage_calls, merges, bucket_checks = 0, [], [], [], []
    storage_calls, handles = collections.Counter(), collections.Counter()
    for rel, path in python_files(package):
        text = open(path, encoding="utf-8").read()
        lines += text.count("\n")
        tree = ast.parse(text)
        below_commands = not rel.startswith(("cli" + os.sep, "cli.py", "__main__")) and rel.split(os.sep)[0] != "cli"
        for owner, name in calls(tree):
            if name == "ArgumentParser" and not rel.startswith(os.path.join("cli", "__init__")):
                parsers.append(rel)
            if name in ("run_stage", "run_main") and rel.startswith("cli" + os.sep):
                stage_calls.append(rel)
            if name == "resolve_sampling":
                merges.append(rel)
            if owner == "storage" and below_commands and not rel.startswith(os.path.join("outputs", "storage")):
                (handles if name in ("Location", "Root") else storage_calls)[rel] += 1
            if name == "is_uri" and rel not in (os.path.join("outputs", "storage.py"), "storage.py"):
                bucket_checks.append(rel)
    print(f"package: {os.path.abspath(package)}, {lines} lines")
    print(f"command-line dialects: {len(set(stage_calls))} command modules through run_stage; "
          f"{len(parsers)} argparse parsers of a command's own {sorted(set(parsers)) or ''}")
    print(f"sampling merges (calls of resolve_sampling): {len(merges)} in {sorted(set(merges))}")
    print(f"storage.<function>() calls below the commands: {sum(storage_calls.values())} in "
          f"{len(storage_calls)} modules; is_uri() outside storage.py: {len(bucket_checks)}; handles made: "
          f"{sum(handles.values())} in {len(handles)} modules")
    for rel, n in storage_calls.most_common():
        print(f"  {n:4d}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
