"""A config folder cannot reach the environment, run code, blow up memory or leave its folder:
each attempt is one line and exit 2, before anything runs (docs/security.md)."""

import os
import time

import pytest
from helpers import run_main

from arplatform.cli import train as train_cli

SECRET = "PLANTED-SECRET-7c1f"

# Ways to build `${oc.env:…}` that a substring check does not see; the first is the red team's
BYPASSES = {  # (only the schema's keys: an unknown key is refused anyway, for another reason)
    "decode, resolver name from a key": ("name: oc\ntracking:\n  experiment: "
                                         r"""'${oc.decode:"\${${name}.env:ARPLATFORM_TEST_SECRET}"}'""" "\n"),
    "the resolver's name split over keys": ("name: nv\ntracking:\n  experiment: "
                                            r"""'${oc.decode:"\${oc.e${name}:ARPLATFORM_TEST_SECRET}"}'""" "\n"),
    "the call held by a key without '${'": ("run_name: 'oc.env:ARPLATFORM_TEST_SECRET'\ntracking:\n  experiment: "
                                           r"""'${oc.decode:"\${${run_name}}"}'""" "\n"),
    "decode, written out": r"""tracking:
  experiment: '${oc.decode:"\${oc.env:ARPLATFORM_TEST_SECRET}"}'
""",
    "spaced": "tracking:\n  experiment: '${ oc.env : ARPLATFORM_TEST_SECRET }'\n",
    "through another key": "run_name: '${oc.env:ARPLATFORM_TEST_SECRET}'\ntracking:\n  experiment: '${run_name}'\n",
    "escaped, for a later reader": "tracking:\n  experiment: '\\${oc.env:ARPLATFORM_TEST_SECRET}'\n",
    "with a default": "tracking:\n  experiment: '${oc.env:ARPLATFORM_TEST_SECRET,none}'\n",
}


def config_folder(tmp_path, body: str, name: str = "leak") -> str:
    folder = tmp_path / "configs" / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text("# @package _global_\ndefaults: [schema, _self_]\n" + body)
    return str(tmp_path / "configs")


def print_config(config_dir: str, name: str, *overrides) -> tuple[int, str]:
    return run_main(train_cli.main, ["--config-dir", config_dir, "--config-name", f"transformer/{name}",
                                     "--print-config", *overrides])


@pytest.mark.parametrize("body", list(BYPASSES.values()), ids=list(BYPASSES))
def test_no_interpolation_reads_the_environment(body, tmp_path, monkeypatch):
    monkeypatch.setenv("ARPLATFORM_TEST_SECRET", SECRET)
    code, err = print_config(config_folder(tmp_path, body), "leak")
    assert code == 2 and SECRET not in err and len(err.strip().splitlines()) == 1, err


def test_an_override_cannot_read_the_environment_either(tmp_path, monkeypatch):
    monkeypatch.setenv("ARPLATFORM_TEST_SECRET", SECRET)
    folder = config_folder(tmp_path, "name: plain\n", "plain")
    for value in ("${oc.env:ARPLATFORM_TEST_SECRET}", r'${oc.decode:"\${oc.env:ARPLATFORM_TEST_SECRET}"}'):
        code, err = print_config(folder, "plain", f"tracking.experiment='{value}'")
        assert code == 2 and SECRET not in err and len(err.strip().splitlines()) == 1, err
    # and OmegaConf's own oc.env is back afterwards, for whoever else uses OmegaConf in this process
    from omegaconf import OmegaConf

    assert OmegaConf.create({"x": "${oc.env:ARPLATFORM_TEST_SECRET}"}).x == SECRET


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdef", "bcdefg", strict=True):
        levels.append(f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, "
                      f"*{prev}, *{prev}]")
    folder = config_folder(tmp_path, "\n".join(levels) + "\n", "bomb")
    t0 = time.perf_counter()
    code, err = print_config(folder, "bomb")
    assert code == 2 and "expands to more than" in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - t0 < 30  # (a generous bound: it took minutes and 1.7 GB before)


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']", "!!python/name:os.environ",
                                 "!!python/object:builtins.dict {}", "!custom 1"])
def test_yaml_tags_that_construct_objects_are_refused(tag, tmp_path):
    code, err = print_config(config_folder(tmp_path, f"name: x\nextra: {tag}\n", "tags"), "tags")
    assert code == 2 and "tag" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", ["../../etc/passwd", "transformer/../../x", "/etc/hosts", "transformer/.hidden/.."])
def test_config_names_cannot_leave_the_config_folder(name, tmp_path):
    code, err = run_main(train_cli.main, ["--config-dir", config_folder(tmp_path, "name: x\n", "x"),
                                          "--config-name", name, "--print-config"])
    assert code == 2 and "config name" in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_config_dir_is_one_line(tmp_path):
    code, err = run_main(train_cli.main, ["--config-dir", str(tmp_path / "nowhere"), "--config-name", "x"])
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "nowhere")


@pytest.mark.slow
def test_a_non_editable_install_has_its_configs(tmp_path):
    """`pip install .` (a wheel, not a link to this tree) ships the Hydra configs as package data:
    its `arplatform train --print-config --config-name transformer/mnist_sample` composes."""
    import shutil
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = tmp_path / "source"  # a copy: building in place would leave build/ and egg-info in the tree
    shutil.copytree(os.path.join(repo, "arplatform"), source / "arplatform",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(repo, name), source / name)
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    assert (site / "arplatform" / "configs" / "transformer" / "mnist_sample.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy before this tree's editable one
    shown = subprocess.run([str(site / "bin" / "arplatform"), "train", "--print-config", "--config-name",
                            "transformer/mnist_sample"], capture_output=True, text=True, timeout=120, env=env,
                           cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "name: mnist_sample" in shown.stdout and "ema_decay: 0.99" in shown.stdout
