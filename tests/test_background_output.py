"""hold_background_output: what library threads print during a write is replayed after success and dropped after a
failure (so a full disk stays one line even when a writer thread's traceback comes first)."""

import io
import logging
import sys
import threading

import pytest

from genesis_jax.workdir import hold_background_output


@pytest.fixture
def stderr(monkeypatch):
    """A StringIO as sys.stderr, installed in the test body (pytest re-installs its own capture between fixture
    setup and the call); a failure installs process-wide quiet hooks, restored afterwards."""
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    filters = list(logging.getLogger("asyncio").filters)
    stream = io.StringIO()

    def install():
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    yield install
    logging.getLogger("asyncio").filters = filters


def thread_prints(text: str) -> None:
    t = threading.Thread(target=lambda: print(text, file=sys.stderr, end=""))
    t.start()
    t.join()


def test_thread_output_is_replayed_after_a_write_that_succeeds(stderr):
    stderr = stderr()
    with hold_background_output():
        thread_prints("thread says hello\n")
        print("main line", file=sys.stderr)
        assert "thread says hello" not in stderr.getvalue()  # held while the write runs
    assert sys.stderr is stderr
    assert stderr.getvalue() == "main line\nthread says hello\n"


def test_thread_tracebacks_are_dropped_after_a_write_that_fails(stderr):
    stderr = stderr()
    with pytest.raises(OSError):
        with hold_background_output():
            thread_prints("Traceback (most recent call last):\nRuntimeError: Event loop is closed\n")
            raise OSError(28, "No space left on device")
    print("genesis-jax convert: error: no space left on /disk/w", file=sys.stderr)
    thread_prints("a later traceback\n")
    assert stderr.getvalue() == "genesis-jax convert: error: no space left on /disk/w\n"
    assert sys.stderr is not stderr  # the holder stays in place and keeps dropping what threads print
