"""Progress a person can follow: on a terminal one bar redrawn in place (rate, time left);
elsewhere (CI, `ray job logs`, a pipe) a line every `every_s` seconds and one at the end.

    with Progress("encode", total=len(images), unit="images", log=log) as bar:
        bar.update(len(batch))
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable


def on_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """`done` of `total` `unit` of `what`: a bar on a terminal (`stream`, stderr by default),
    else `log` lines at most every `every_s` seconds. `clock` is there for tests."""

    width = 24

    def __init__(self, what: str, total: int, unit: str = "", log: Callable[[str], object] = print, stream=None,
                 every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.log = what, max(0, int(total)), unit, log
        self.stream = sys.stderr if stream is None else stream
        self.bar = on_terminal(self.stream)
        self.every_s, self.clock = every_s, clock
        self.start = self.last_shown = clock()
        self.done = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = min(int(done), self.total) if self.total else int(done)
        now = self.clock()
        if self.bar:
            if now - self.last_shown >= 0.1 or self.done == self.total:  # at most 10 redraws a second
                self.stream.write("\r" + self.text(now, drawn=True))
                self.stream.flush()
                self.last_shown = now
        elif now - self.last_shown >= self.every_s:
            self.log(self.text(now))
            self.last_shown = now

    def note(self, line: str) -> None:
        """A line of its own (an epoch's loss) that the bar does not overwrite."""
        if self.bar:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.log(line)
        if self.bar:
            self.set(self.done)

    def close(self) -> None:
        """The final state: the bar ends its line; in plain mode one last line."""
        now = self.clock()
        if self.bar:
            self.stream.write("\r" + self.text(now, drawn=True) + "\n")
            self.stream.flush()
        else:
            self.log(self.text(now))

    def text(self, now: float, drawn: bool = False) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        share = self.done / self.total if self.total else 0.0
        left = f", {duration((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else ""
        shown_rate = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
        counts = f"{self.done:,}/{self.total:,}{unit} ({share:.0%}), {shown_rate}{unit}/s"
        if not drawn:
            return f"  {self.what}: {counts}{left}" if self.done < self.total else \
                f"  {self.what}: {counts}, in {duration(elapsed)}"
        filled = int(self.width * share)
        return f"{self.what} |{'█' * filled}{' ' * (self.width - filled)}| {counts}{left}\x1b[K"
