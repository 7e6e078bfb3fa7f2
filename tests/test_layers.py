"""The package's layers hold: no module imports a module of a higher layer, and no stage imports
another stage (a piece two stages share lives in `jobs/`, below both). Each layer is a folder of
`arplatform/`; docs/design.md draws the same picture."""

import ast
import os

import arplatform

PACKAGE = os.path.dirname(arplatform.__file__)

# lowest first; a module may import its own layer or lower ones
LAYERS = [
    ("core", ["core"]),  # torch, numpy and the standard library only
    ("data", ["data"]),  # image datasets, grids and PNGs
    ("config", ["config"]),  # typed configs and what follows from them (the training plan, a sweep's space)
    ("outputs", ["outputs"]),  # storage, publishing, runs, sweeps, sample folders
    ("tracking", ["tracking"]),  # MLflow, the report, a sweep's pictures
    ("distributed", ["distributed"]),  # what runs inside Ray
    ("jobs", ["jobs"]),  # what two stages share
    ("stages", ["stages"]),  # run_<stage>(config); never one another
    ("commands", ["cli", "__main__"]),  # one module per command; the pipeline runs stages in turn
]


def layer_of(module: str) -> int:
    """The layer of `arplatform.<module>`: its folder's."""
    matches = [(len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
               if module == p or module.startswith(p + ".")]
    if matches:
        return max(matches)[1]
    raise AssertionError(f"arplatform.{module} is in no layer: put it in a layer's folder (tests/test_layers.py, "
                         "docs/design.md)")


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
    """The arplatform modules `module` imports anywhere in its file (inside functions too): relative
    and absolute imports, `from arplatform import x`, and `importlib.import_module("arplatform.x")`
    or `(".x", package)` with a constant or f-string prefix."""
    package = module.split(".")[:-1] if not path.endswith("__init__.py") else module.split(".")
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
            elif node.module and (node.module == "arplatform" or node.module.startswith("arplatform.")):
                base = []
            else:
                continue
            target = ".".join(base + node.module.removeprefix("arplatform").lstrip(".").split(".")) \
                if node.module else ".".join(base)
            target = target.strip(".")
            if target:
                out.add(target)
            out.update(f"{target}.{a.name}".strip(".") for a in node.names)  # names that are modules count
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("arplatform.") for a in node.names if a.name.startswith("arplatform."))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            out.update(dynamic_import(node, package))
    return out


def dynamic_import(call: ast.Call, package: list[str]) -> set[str]:
    """The module an `import_module` call names, as far as its constant text says: a relative
    name with `__name__`/a package resolves against this module's package; the part of an
    f-string before its first field is a prefix (every module under it counts)."""
    if not call.args:
        return set()
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        name = arg.value
    elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        name = arg.values[0].value.rstrip(".")
    else:
        return {"<dynamic>"}  # an import the test cannot read: named so the assertion shows it
    if name.startswith("."):
        level = len(name) - len(name.lstrip("."))
        return {".".join(package[: len(package) - level + 1] + [name.lstrip(".")]).strip(".")}
    if name == "arplatform" or name.startswith("arplatform."):
        return {name.removeprefix("arplatform").lstrip(".")}
    return set()


def test_nothing_imports_upward_and_no_stage_imports_another():
    found = modules()
    wrong = []
    for module, path in sorted(found.items()):
        mine = layer_of(module)
        for target in sorted(imported(module, path)):
            if target == "<dynamic>":
                wrong.append(f"{module}: an import_module call whose module the test cannot read")
                continue
            while target and target not in found:  # `from .x import f` names x.f: the module is x
                target = target.rpartition(".")[0]
            if not target:
                continue  # the package's public API (arplatform/__init__.py), loaded lazily
            theirs = layer_of(target)
            if theirs > mine:
                wrong.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}): upward")
            elif LAYERS[mine][0] == "stages" and theirs == mine and target not in (module, "stages"):
                wrong.append(f"{module} imports {target}: a stage beside it (share it through jobs/)")
    assert not wrong, "\n".join(wrong)


def test_the_layer_test_reads_every_import_form(tmp_path):
    """The reader above finds `from arplatform import x`, relative, absolute and importlib imports:
    a stage importing a stage in any of these forms is caught."""
    forms = {
        "from arplatform.stages import train": "stages.train",
        "from arplatform import stages": "stages",
        "from ..stages.train import run_train": "stages.train",
        "from . import train": "stages.train",
        "import arplatform.stages.train": "stages.train",
        "import importlib; importlib.import_module('arplatform.stages.train')": "stages.train",
        "import importlib; importlib.import_module('.train', __package__)": "stages.train",
        "import importlib; importlib.import_module(f'arplatform.stages.{name}')": "stages",
    }
    for code, expected in forms.items():
        path = tmp_path / "evaluate.py"
        path.write_text(code + "\n")
        assert expected in imported("stages.evaluate", str(path)), code


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
