"""The library's notes (the `corrdiff` logger) reach the stderr a command runs with, even when it changes."""

import io
import logging
import sys

from corrdiff.cli.main import _show_library_notes


def test_notes_go_to_the_current_stderr_each_time(monkeypatch):
    _show_library_notes()
    _show_library_notes()  # a second command in the same process adds no second handler
    logger = logging.getLogger("corrdiff")
    assert sum(type(h).__name__ == "_CurrentStderr" for h in logger.handlers) == 1
    for text in ("first", "second"):
        captured = io.StringIO()
        monkeypatch.setattr(sys, "stderr", captured)
        logging.getLogger("corrdiff.data.stats").info("note: %s", text)
        assert captured.getvalue() == f"note: {text}\n"
