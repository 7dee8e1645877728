"""A generation killed mid-file, simulated: the writer's nth `write` raises as a crash would."""

from corrdiff.inference import writer as writer_module


def crash_on_write(monkeypatch, nth: int):
    """Make the `nth` call of `EnsembleWriter.write` raise KeyboardInterrupt; returns a function that undoes it."""
    real_write = writer_module.EnsembleWriter.write
    count = {"n": 0}

    def crashing(self, index, *args):
        count["n"] += 1
        if count["n"] == nth:
            raise KeyboardInterrupt("simulated crash")
        return real_write(self, index, *args)

    monkeypatch.setattr(writer_module.EnsembleWriter, "write", crashing)
    return lambda: monkeypatch.setattr(writer_module.EnsembleWriter, "write", real_write)
