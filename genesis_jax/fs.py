"""Filesystem preconditions of the commands: owns the early "can this directory be written?" check, so a read-only
or misplaced work directory fails at the start of a run rather than after its first round of training."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class NotWritableError(ValueError):
    """A work or output directory that cannot be created or written; the message names it."""


def ensure_writable(directory: str | os.PathLike, what: str = "work directory") -> Path:
    """Create ``directory`` if needed and prove a file can be written in it (a probe file, removed at once)."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NotWritableError(f"{directory}: cannot write to the {what}: {err.strerror or err}") from None
    return directory
