"""Inputs the platform used to read wrong or with a traceback (the red team's N10, N11, N13,
N19, N22, N27): each is read right, or refused in one line that names it."""

import os
import stat

import numpy as np
import pytest
from PIL import Image

from arplatform.config import root_path
from arplatform.core.errors import ConfigError, DataError
from arplatform.core.io import save_npy
from arplatform.data.datasets import download, labels_file, list_folder, read_image


@pytest.mark.parametrize("dtype,value,top", [(np.uint16, 20000, 65535), (np.uint16, 65535, 65535), (np.uint8, 78, 255)])
def test_greyscale_images_of_any_depth_are_scaled_not_clipped(tmp_path, dtype, value, top):
    path = tmp_path / "g.png"
    Image.fromarray(np.full((6, 6), value, dtype=dtype)).save(path)  # uint16: a 16-bit PNG
    pixels = read_image(str(path), "L", None, 1 << 24)
    assert pixels.shape == (1, 6, 6)
    assert abs(float(pixels.mean()) - value / top) < 1 / 255 + 1e-6, (dtype, pixels.mean())


@pytest.mark.parametrize("value", ["file://", "file:///", "/", "//", "file://  "])
def test_an_output_root_that_is_the_filesystem_root_is_refused(value):
    with pytest.raises(ConfigError, match="output_root"):
        root_path("output_root", value)
    assert root_path("output_root", "file:///tmp/x") == "/tmp/x"
    assert root_path("output_root", "s3://bucket/prefix") == "s3://bucket/prefix"


@pytest.mark.parametrize("label", ["²", "٣", "-1", "1e3", "１", "100000", "1000000000"])
def test_labels_csv_takes_ascii_labels_below_the_class_bound(tmp_path, label):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text(f"file,label\na.png,0\na.png,{label}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels.csv:3: expected `file,label` with a label in 0\.\.99999"):
        list_folder(str(tmp_path))
    (tmp_path / "labels.csv").write_text("a.png,7\n", encoding="utf-8")
    assert labels_file(str(tmp_path)) == [(str(tmp_path / "a.png"), 7)]


def test_a_download_without_a_network_is_one_line(tmp_path):
    with pytest.raises(DataError, match="could not download") as e:
        download("http://127.0.0.1:9/none.gz", str(tmp_path / "none.gz"), "0" * 32)
    assert "\n" not in str(e.value) and not os.listdir(tmp_path)


def test_written_files_follow_the_umask(tmp_path):
    from arplatform.core.io import current_umask

    path = save_npy(tmp_path / "codes.npy", np.zeros(3, np.int32))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()


def test_an_unreachable_tracking_server_is_one_line_in_seconds(tmp_path):
    """MLflow's client retries a dead server for minutes, silently (N24): probed once first."""
    import time

    from helpers import run_main

    from arplatform.cli import generate as generate_cli
    from arplatform.distributed.cluster import free_port

    t0 = time.perf_counter()
    code, err = run_main(generate_cli.main, ["transformer_ckpt=models:/x/1", f"out={tmp_path / 's'}",
                                             f"tracking_uri=http://127.0.0.1:{free_port()}"])
    assert code == 2 and "tracking server does not answer" in err and err.strip().count("\n") == 0, err
    assert time.perf_counter() - t0 < 60
