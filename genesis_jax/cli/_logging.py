"""Console logging for the commands: genesis_jax at INFO, the chatty libraries (orbax via absl) at WARNING, and
library lines that are noise to a user of the command dropped (:func:`quiet_libraries`, applied to every command):
TFDS' "Variant folder ... has no dataset_info.json" on a fresh data directory, and errors orbax's writer threads log
for a failure the command then reports itself in one line."""

from __future__ import annotations

import logging
import sys
import threading
import warnings


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("genesis_jax").setLevel(level)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # absl comes with ml_collections; nothing to quieten without it
        pass


class _LibraryNoise(logging.Filter):
    """Drops TFDS' variant-folder scan warnings and what orbax's background threads log at ERROR (their failure
    reaches the main thread as an exception, which the command reports as one line naming the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Variant folder "):
            return False
        background = threading.current_thread() is not threading.main_thread()
        return not (background and record.levelno >= logging.ERROR and "orbax" in record.pathname)


_NOISE = _LibraryNoise()


def quiet_libraries() -> None:
    """Install the filters of :class:`_LibraryNoise` on absl's logger (TFDS and orbax log through it) and silence
    torch's warning about an old pickle protocol (the file is then refused or read with its own message)."""
    logger = logging.getLogger("absl")
    if _NOISE not in logger.filters:
        logger.addFilter(_NOISE)
    warnings.filterwarnings("ignore", message=".*Detected pickle protocol.*")
