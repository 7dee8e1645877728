"""Progress bars: tqdm's on a terminal or in a notebook, whole lines in a log.

A tqdm bar redraws itself with carriage returns several times a second; redirected to a file (a batch job's
log) that is thousands of frames on one line. `bar` gives tqdm's bar where someone watches it, and elsewhere a
`LineBar`: one line when the work starts, one each time it passes another `LINE_STEP` percent, one at the end.
"""

import math
import sys

from tqdm.auto import tqdm

LINE_STEP = 10  # percent of the work between two lines of a LineBar


class LineBar(tqdm):
    """A tqdm bar that writes whole lines: at the start, every `LINE_STEP` percent and at the end (a line every
    `mininterval` seconds, at most, when the total is unknown)."""

    def __init__(self, *args, **kwargs):
        self._next_percent = 0.0
        self._last_written = None
        kwargs.setdefault("mininterval", 1.0)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if self.disable:
            return True
        finished = self.total is not None and self.n >= self.total
        percent = 100.0 * self.n / self.total if self.total else None
        due = percent is None or percent >= self._next_percent or finished
        if due and self.n != self._last_written:
            self.fp.write((msg or self.__str__()).strip("\r") + "\n")
            self.fp.flush()
            self._last_written = self.n
            if percent is not None:
                self._next_percent = (math.floor(percent / LINE_STEP) + 1) * LINE_STEP
        return True

    def close(self):
        if self.disable:
            return
        if self._last_written != self.n:  # the last state, once
            self.display()
        # Not tqdm's own close, which would redraw the bar or return to the line's start with a carriage return.
        self._decr_instances(self)
        self.disable = True


def interactive(stream=None) -> bool:
    """Whether a person watches `stream` (default stderr): a terminal, or a Jupyter kernel's output."""
    stream = stream if stream is not None else sys.stderr
    return "ipykernel" in sys.modules or bool(getattr(stream, "isatty", lambda: False)())


def bar(*args, **kwargs) -> tqdm:
    """A progress bar with tqdm's arguments: tqdm's own where someone watches it, else a `LineBar`."""
    return (tqdm if interactive(kwargs.get("file")) else LineBar)(*args, **kwargs)
