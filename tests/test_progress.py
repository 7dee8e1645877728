"""Progress bars: tqdm's where someone watches, whole lines (no carriage returns) in a log."""

import io

from tqdm.auto import tqdm

from corrdiff.progress import bar, LineBar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_at_the_start_every_ten_percent_and_at_the_end():
    log = io.StringIO()
    with bar(total=50, desc="train", file=log, mininterval=0) as progress:
        for _ in range(50):
            progress.update()
    text = log.getvalue()
    assert "\r" not in text and isinstance(progress, LineBar)
    lines = text.splitlines()
    assert len(lines) == 11 and lines[0].startswith("train:   0%") and lines[-1].startswith("train: 100%")
    assert [line.split("%")[0].split()[-1] for line in lines] == [str(p) for p in range(0, 101, 10)]


def test_an_iterable_of_unknown_length_and_a_disabled_bar_write_only_lines_or_nothing():
    log = io.StringIO()
    for _ in bar(iter(range(3)), desc="x", file=log, mininterval=0):
        pass
    assert "\r" not in log.getvalue() and log.getvalue().splitlines()[-1].startswith("x: 3it")
    quiet = io.StringIO()
    for _ in bar(range(5), file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


def test_a_terminal_gets_tqdms_own_bar():
    terminal = Terminal()
    progress = bar(total=3, file=terminal)
    assert type(progress) is not LineBar and isinstance(progress, tqdm)
    progress.close()
