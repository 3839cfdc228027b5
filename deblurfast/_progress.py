"""Progress bars (tqdm) on stderr for the commands: `deblur`, `train`, `bench`.

On a terminal the bar is redrawn in place. In a log file (stderr not a terminal)
a redraw would be a carriage return inside one endless line, so there each
update is a line of its own, at most one every LOG_INTERVAL_S seconds.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


class _Lines:
    """A stream for tqdm that turns in-place redraws into plain lines: the first, then at most
    one every LOG_INTERVAL_S seconds, and the bar's last state when it closes."""

    def __init__(self, stream):
        self.stream, self.pending, self.last = stream, None, -LOG_INTERVAL_S

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.pending = line
            if time.monotonic() - self.last >= LOG_INTERVAL_S:
                self._emit()
        elif "\n" in text and self.pending:  # a bar that closes ends its line
            self._emit()

    def _emit(self) -> None:
        self.stream.write(self.pending + "\n")
        self.pending, self.last = None, time.monotonic()

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it",
             disable: bool = False, initial: int = 0, leave: bool = True) -> tqdm:
    """A tqdm bar with count, rate and ETA (when the total is known) on stderr."""
    stream = sys.stderr
    tty = stream.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial, leave=leave,
                file=stream if tty else _Lines(stream), mininterval=0.2,
                dynamic_ncols=tty, ascii=not tty, smoothing=0.1)


def note(text: str, file=None) -> None:
    """Prints a line (on stderr by default) without breaking a bar being drawn."""
    tqdm.write(text, file=file or sys.stderr)
