"""Progress a person can follow: a bar with rate and time left on a terminal; plain lines at
most every `every_s` seconds elsewhere (CI, Ray job logs), and one at the end."""

import io
import subprocess
import sys

from arplatform.core.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_terminal_gets_one_bar_redrawn_in_place_with_rate_and_time_left(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    screen, clock, lines = Terminal(), Clock(), []
    with Progress("encode", 1000, "images", lines.append, stream=screen, clock=clock) as bar:
        for _ in range(4):
            clock.now += 1.0
            bar.update(200)
        bar.note("epoch 0: val loss 1.0")
    assert lines == ["epoch 0: val loss 1.0"]  # a note is a line of its own; the bar is not a log line
    drawn = screen.getvalue()
    assert drawn.count("\n") == 1 and drawn.endswith("\n")  # one line, redrawn with \r, ended once
    assert "800/1,000 images (80%), 200 images/s, 1 s left" in drawn
    assert "█" * 19 in drawn and "\r" in drawn


def test_elsewhere_plain_lines_at_most_every_few_seconds_and_one_at_the_end():
    screen, clock, lines = io.StringIO(), Clock(), []
    with Progress("generate", 100, "images", lines.append, stream=screen, every_s=10, clock=clock) as bar:
        for _ in range(50):
            clock.now += 1.0
            bar.update(2)
    assert screen.getvalue() == ""  # nothing drawn where no one watches a terminal
    assert len(lines) == 5 + 1  # at 10, 20, 30, 40, 50 s, and the end
    assert lines[0] == "  generate: 20/100 images (20%), 2 images/s, 40 s left"
    assert lines[-1] == "  generate: 100/100 images (100%), 2 images/s, in 50 s"


def test_a_command_through_a_pipe_writes_no_bar_codes(tmp_path):
    """The same loop in a subprocess whose output is a pipe (as under CI and `ray job logs`)."""
    code = ("from arplatform.core.progress import Progress\n"
            "with Progress('encode', 3, 'images') as p:\n    [p.update() for _ in range(3)]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "\r" not in proc.stdout + proc.stderr and "\x1b" not in proc.stderr
    assert proc.stdout.startswith("  encode: 3/3 images (100%)"), proc.stdout
