"""The package's layers hold: no module imports a module of a higher layer, and no stage imports
another stage (a piece two stages share lives in `jobs/`, below both). docs/design.md draws the
same layers."""

import ast
import os

import arplatform

PACKAGE = os.path.dirname(arplatform.__file__)

# lowest first; a module may import its own layer or lower ones
LAYERS = [
    ("core", ["core"]),  # torch and numpy only
    ("errors and clocks", ["errors", "budget", "progress", "startup"]),
    ("files", ["storage", "images", "imagedata"]),
    ("config", ["config_files", "config"]),
    ("outputs and plans", ["publish", "runs", "sweeps", "sweep_pictures", "tracking", "train_plan", "tune_space",
                           "sample_folder", "sample_quality", "image_sampler", "report"]),
    ("distributed", ["distributed"]),
    ("jobs", ["jobs"]),
    ("stages", ["stages"]),  # tokenize, train, tune, generate, evaluate
    ("chains of stages", ["stages.pipeline", "stages.sampler_tune"]),
    ("entry points", ["__main__", "cli", "train", "tokenize", "generate", "evaluate", "tune", "tune_sampler",
                      "pipeline", "demo"]),
]


def layer_of(module: str) -> int:
    """The layer of `arplatform.<module>`: the layer of its longest prefix there (a package's
    modules share its layer unless named themselves)."""
    matches = [(len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
               if module == p or module.startswith(p + ".")]
    if matches:
        return max(matches)[1]
    raise AssertionError(f"arplatform.{module} is in no layer: add it to tests/test_layers.py and docs/design.md")


def modules() -> dict[str, str]:
    """{dotted name under arplatform: file} of every module but the package's own __init__ (the public API)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), PACKAGE)[:-3].replace(os.sep, ".")
                if rel != "__init__":
                    found[rel.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


def imported(module: str, path: str) -> set[str]:
    """The arplatform modules `module` imports anywhere in its file (inside functions too)."""
    package = module.split(".")[:-1] if not path.endswith("__init__.py") else module.split(".")
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}".strip(".") for a in node.names]
            elif node.module and node.module.startswith("arplatform"):
                names = [node.module.removeprefix("arplatform").lstrip(".")]
            else:
                continue
            out.update(n for n in names if n)
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("arplatform.") for a in node.names if a.name.startswith("arplatform."))
    return out


def test_nothing_imports_upward_and_no_stage_imports_another():
    found = modules()
    wrong = []
    for module, path in sorted(found.items()):
        mine = layer_of(module)
        for target in sorted(imported(module, path)):
            if target not in found and target.rsplit(".", 1)[0] in found:
                target = target.rsplit(".", 1)[0]  # `from .. import storage` names a module; `from .x import f` not
            theirs = layer_of(target)
            if theirs > mine:
                wrong.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}): upward")
            elif LAYERS[mine][0] == "stages" and theirs == mine and target != module:
                wrong.append(f"{module} imports {target}: a stage beside it (share it through jobs/)")
    assert not wrong, "\n".join(wrong)


def test_the_core_imports_only_torch_numpy_and_itself():
    allowed = {"torch", "numpy", "__future__"}
    wrong = []
    for module, path in modules().items():
        if not module.startswith("core"):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top not in __import__("sys").stdlib_module_names:
                    wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_every_package_the_platform_imports_is_declared():
    """pyproject.toml names every third-party package `arplatform` imports (optuna: the `tune`
    extra; mlxtend and scikit-learn: the `sample` extra), and nothing it never imports."""
    import sys

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(os.path.dirname(PACKAGE), "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    declared = {d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for d in project["dependencies"] + project["optional-dependencies"]["tune"]
                + project["optional-dependencies"]["sample"]}
    # import name → package
    distribution = {"PIL": "pillow", "yaml": "pyyaml", "hydra": "hydra-core", "sklearn": "scikit-learn"}
    used = set()
    for _, path in modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
            used.update(n.split(".")[0] for n in names)
    third_party = {distribution.get(m, m).lower() for m in used
                   if m not in sys.stdlib_module_names and m not in ("arplatform", "__future__")}
    assert third_party - declared == set(), "imported but not declared"
    assert declared - third_party == set(), "declared but never imported"


def test_the_read_tasks_module_and_the_package_import_without_torch():
    """Ray Data's read tasks run `distributed/row_split.py`: their worker processes import it (and
    the package's __init__) and must not pay torch's import; the public names still load on use."""
    import subprocess
    import sys

    code = ("import sys, arplatform.distributed.row_split; assert 'torch' not in sys.modules, 'torch imported'; "
            "from arplatform import GPT, TokenLayout, decode_codes_to_images; assert 'torch' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
