"""The quality contract: each main job, run once as a user runs it, must keep its sample quality
within the floors of tests/quality_floors.yaml (set from a distribution over training seeds,
with a margin: noise passes, a real regression fails). CI runs it on every fresh clone."""

import json
import os
import subprocess
import sys

import pytest
import yaml

FLOORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quality_floors.yaml")


def load_floors() -> dict:
    with open(FLOORS, encoding="utf-8") as f:
        return yaml.safe_load(f)


def figures(report: dict) -> dict:
    """The three guarded figures of a pipeline's quality.json."""
    return {"accuracy": report["accuracy"], "frechet_ratio": report["frechet"]["samples_over_reconstructions"],
            "bits_per_code": report["heldout_bits_per_code"]}


def breaches(found: dict, floors: dict) -> list[str]:
    """What falls past a floor: accuracy below its minimum, the Fréchet ratio or the bits per code
    above their maximum."""
    out = []
    if found["accuracy"] < floors["accuracy_min"]:
        out.append(f"class accuracy {found['accuracy']:.3f} < floor {floors['accuracy_min']}")
    if found["frechet_ratio"] > floors["frechet_ratio_max"]:
        out.append(f"Fréchet ratio {found['frechet_ratio']:.3f} > floor {floors['frechet_ratio_max']}")
    if found["bits_per_code"] > floors["bits_per_code_max"]:
        out.append(f"held-out bits per code {found['bits_per_code']:.3f} > floor {floors['bits_per_code_max']}")
    return out


def test_the_floors_sit_outside_every_measured_seed_and_catch_a_regression():
    """Each floor lies beyond the worst measured seed (noise passes) and the regressions measured
    beside them (recorded with the floors) fail."""
    for job, entry in load_floors().items():
        floors, measured = entry["floors"], entry["measured"]
        for seed in measured["seeds"]:
            assert breaches(seed, floors) == [], (job, seed)
        for regression in entry.get("regressions", []):
            assert breaches(regression, floors), (job, regression)


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the suite's 900 s is too short where `auto` trains in fp32: 1,546 s on a Zen 3 EPYC
@pytest.mark.parametrize("job", list(load_floors()))
def test_the_main_job_keeps_its_sample_quality(job, tmp_path, capsys):
    """The job's own command (`python -m arplatform pipeline --config-name <config>`: what
    `python3 tasks.py demo` runs for the main job) on a fresh output root; its quality.json against
    the floors. The figures go to the log, so CI shows them on every run."""
    entry = load_floors()[job]
    proc = subprocess.run([sys.executable, "-m", "arplatform", "pipeline", "--config-name", entry["config"],
                           f"output_root={tmp_path}"], capture_output=True, text=True, timeout=2700)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (quality,) = [os.path.join(d, "quality.json") for d, _, files in os.walk(tmp_path / "samples")
                  if "quality.json" in files]
    with open(quality, encoding="utf-8") as f:
        found = figures(json.load(f))
    wall = [line for line in proc.stdout.splitlines() if line.startswith("wall time:")]
    with capsys.disabled():  # shown in CI's log on every run, passing or not
        print(f"\nquality of {job}: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items()) + "; " + " ".join(wall))
    assert breaches(found, entry["floors"]) == [], (job, found)
