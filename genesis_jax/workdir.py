"""Safe writing of work and dataset directories: one writer at a time, directories replaced atomically.

- :func:`hold` takes an OS file lock (``fcntl.flock``) on ``<dir>/.genesis_jax.lock`` for as long as a command
  writes that directory. The kernel drops the lock when the process exits in any way (kill -9 included), so a
  crash never leaves a stale lock; the file itself stays and records the last holder's pid and command, which is
  how a refused second writer can name it. Nested ``hold`` calls on the same directory in one process are no-ops.
- :func:`replace_directory` moves a completely written directory into place, so a reader (or a crash at any
  moment) sees the old directory or the new one, never a half-written one. :func:`atomic_file` does the same for
  one file a library writes by name (nibabel, a MetaImage writer).
- :func:`crash_point` is a TEST-ONLY hook: when ``GENESIS_JAX_CRASH_AT`` names a phase, the process SIGKILLs itself
  there (tests/test_crash_resume.py uses it to kill real runs at exact phase boundaries). Unset, it does nothing.

This module imports only the standard library, so every layer (data preparation, training, active learning) can
use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_FILE = ".genesis_jax.lock"
CRASH_ENV = "GENESIS_JAX_CRASH_AT"

log = logging.getLogger(__name__)
_held: dict[Path, int] = {}  # lock file -> nesting depth, for this process
_crash_counts: dict[str, int] = {}


class WorkdirError(RuntimeError):
    """A directory a command must write cannot be used (read-only, not a directory, ...); one line naming it."""


class NotWritableError(WorkdirError):
    """A work or output directory that cannot be created or written; the message names it."""


class WorkdirBusy(WorkdirError):
    """Another process holds the directory's lock; the message names the directory and the holder's pid."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() and mkdir() give; mkstemp/mkdtemp would give 0600/0700
DIR_MODE = 0o777 & ~_umask()


def ensure_writable(directory: str | os.PathLike, what: str = "work directory") -> Path:
    """Create ``directory`` if needed and prove a new file can be written in it (a probe file, removed at once):
    a read-only or misplaced directory fails at the start of a command, not after its first round of work."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NotWritableError(f"{directory}: cannot write to the {what}: {err.strerror or err}") from None
    return directory


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "another process"
    pid, _, command = text.partition(" ")
    return f"`{command}` (pid {pid})" if pid.isdigit() and command else (f"pid {pid}" if pid.isdigit() else
                                                                         "another process")


@contextlib.contextmanager
def hold(
    directory: str | Path, command: str, *, wait: bool = False, enabled: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the write lock of ``directory`` (created if missing) while the block runs.

    Taken by another process: raise :class:`WorkdirBusy` at once, or with ``wait`` block until it is released
    (``on_wait(message)`` is called once first, e.g. to say who is being waited for). ``enabled=False`` (the
    non-primary processes of a multi-host run, which share the primary's lock) does nothing.
    """
    directory = Path(directory).expanduser().resolve()
    lock_path = directory / LOCK_FILE
    if not enabled:
        yield lock_path
        return
    if _held.get(lock_path):  # this process holds it already (a command calling another entry function)
        _held[lock_path] += 1
        try:
            yield lock_path
        finally:
            _held[lock_path] -= 1
        return
    import fcntl

    ensure_writable(directory)  # before any work starts, so a read-only directory fails at once
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise NotWritableError(f"{directory}: cannot write to the work directory: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"{directory}: in use by {_holder(lock_path)}"
            if not wait:
                raise WorkdirBusy(f"{message}; one command at a time writes a directory: wait for it to finish "
                                  "(or stop it) and rerun") from None
            if on_wait is not None:
                on_wait(f"{message}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # a filesystem without locks (some network/FUSE mounts): run, but say so
            log.warning("%s: cannot lock (%s); nothing stops a second command writing it meanwhile", directory,
                        err.strerror or err)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        _held[lock_path] = 1
        try:
            yield lock_path
        finally:
            del _held[lock_path]
    finally:
        os.close(fd)  # releases the flock


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on every platform/filesystem
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sibling_tmp_dir(final: str | Path) -> Path:
    """A fresh empty directory beside ``final`` (same filesystem, so the final move is a rename)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(DIR_MODE)  # mkdtemp makes it 0700; give what mkdir would
    return tmp


def replace_directory(tmp_dir: str | Path, final_dir: str | Path) -> Path:
    """Move the completely written ``tmp_dir`` to ``final_dir``, replacing what is there: atomically where the OS
    can swap two directories (Linux), else by moving the old one aside first (a crash between the two renames then
    leaves the old directory beside, named ``.<name>.old-*``, and no half-written one)."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if final_dir.exists() and not _exchange(tmp_dir, final_dir):
        aside = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-", dir=final_dir.parent))
        os.replace(final_dir, aside / final_dir.name)
        os.replace(tmp_dir, final_dir)
        tmp_dir = aside
    elif not final_dir.exists():
        os.replace(tmp_dir, final_dir)
    shutil.rmtree(tmp_dir, ignore_errors=True)  # after the swap: the old directory
    fsync_dir(final_dir.parent)
    for stale in final_dir.parent.glob(f".{final_dir.name}.*"):  # left by writers killed before their swap
        if stale.name.startswith((f".{final_dir.name}.tmp-", f".{final_dir.name}.old-")):
            shutil.rmtree(stale, ignore_errors=True)
    return final_dir


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` ending like it (``.x.tmp-<random>.nii.gz`` for ``x.nii.gz``, so
    writers that choose the format by extension still do); when the block completes the file is moved onto
    ``final`` in one rename. An error or a kill leaves no ``final`` (a stale ``.x.tmp-*`` at most)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes[-2:]) if final.name.lower().endswith(".gz") else final.suffix
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; give what open() would
        crash_point("atomic_file")  # tests: a kill with the file written but not yet in place
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def crash_point(phase: str, before: Callable[[], None] | None = None) -> None:
    """TEST-ONLY: SIGKILL this process when ``$GENESIS_JAX_CRASH_AT`` is ``phase`` or ``phase@n`` (the n-th time
    this phase is reached, 1-based). ``before`` runs first (e.g. wait for a checkpoint to be on disk)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != phase:
        return
    _crash_counts[phase] = _crash_counts.get(phase, 0) + 1
    if _crash_counts[phase] != int(nth or 1):
        return
    if before is not None:
        before()
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) reports a full disk or quota: an ``OSError`` with
    ENOSPC/EDQUOT, or TensorStore's text for it (its errors are not OSErrors)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
