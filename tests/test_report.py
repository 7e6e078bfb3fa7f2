"""The pipeline's report: one self-contained HTML file (every picture inlined), numbers rounded
for people, a comparison with the previous run of the same config; and, where a Chromium is
installed, opened in a real headless browser that loads every image."""

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from arplatform.data.images import save_png
from arplatform.tracking.report import write_report

QUALITY_TABLE = "| measure | value |\n|---|---|\n| samples | 20 |\n| class accuracy (platform classifier) | 0.950 |\n"


def facts(tmp_path, run_name, accuracy, frechet, val_loss):
    rng = np.random.default_rng(0)
    pictures = {}
    for key in ("grid", "nearest", "reconstructions", "curve"):
        pictures[key] = save_png(tmp_path / f"{key}-src.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    return {"name": "mnist_sample", "run_name": run_name, "pictures": pictures, "quality_table": QUALITY_TABLE,
            "quality": {"accuracy": accuracy, "frechet": {"samples": frechet},
                        "accuracy_per_class": {"0": 0.91234, "1": 1.0}},
            "tokenizer": {"psnr_real_vs_vae": 21.23456, "codebook_usage": 0.987654}, "params": 1234567,
            "times": {"tokenize": 12.3, "train": 45.6}, "best_val_loss": val_loss,
            "runs": ["training run r1: /x"], "config": {"pipeline": {"num_samples": 20}, "train": {"lr": 0.001}}}


def test_one_self_contained_file_rounded_and_compared(tmp_path):
    folder = tmp_path / "report"
    _, html_path = write_report(str(folder), facts(tmp_path, "run-1", 0.95, 30.0, 1.2))
    md_path, html_path = write_report(str(folder), facts(tmp_path, "run-2", 0.97123, 25.04, 1.25))
    page = open(html_path).read()
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) == 4 and not re.search(r"(src|href)='(?!data:)", page)  # nothing outside the file
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    md = open(md_path).read()
    assert "| class accuracy | 0.95 | 0.971 | +0.0212 (better) |" in md
    assert "| Fréchet distance | 30 | 25 | -4.96 (better) |" in md
    assert "| val loss (nats/token) | 1.2 | 1.25 | +0.05 (worse) |" in md
    assert "1,234,567 parameters" in md and "| psnr_real_vs_vae | 21.2 |" in md and "| 0 | 0.912 |" in md
    assert "<details><summary>composed config</summary>" in md and "lr: 0.001" in md
    assert "![samples (top) and their nearest training images (below)](nearest.png)" in md
    # the same run reported again compares with the run before it, not with itself
    md = open(write_report(str(folder), facts(tmp_path, "run-2", 0.97123, 25.04, 1.25))[0]).read()
    assert "| class accuracy | 0.95 | 0.971 |" in md


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")


def test_a_headless_browser_loads_every_image(tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium on this machine (install the OS package chromium to run this check)")
    _, html_path = write_report(str(tmp_path / "report"), facts(tmp_path, "run-1", 0.95, 30.0, 1.2))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", f"file://{html_path}"],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="4/4"' in dom, dom[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", f"file://{html_path}"],
                   capture_output=True, timeout=120)
    assert shot.exists() and Image.open(shot).size == (1200, 2400)
