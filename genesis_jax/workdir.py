"""Safe writing of work and dataset directories: one writer at a time, directories replaced atomically.

- :func:`hold` takes an OS file lock (``fcntl.flock``) on ``<dir>/.genesis_jax.lock`` for as long as a command
  writes that directory. The kernel drops the lock when the process exits in any way (kill -9 included), so a
  crash never leaves a stale lock; the file itself stays and records the last holder's pid and command, which is
  how a refused second writer can name it. Nested ``hold`` calls on the same directory in one process are no-ops.
- :func:`replace_directory` moves a completely written directory into place, so a reader (or a crash at any
  moment) sees the old directory or the new one, never a half-written one; :func:`atomic_file` does the same for
  one file a library writes by name (nibabel, a MetaImage writer, torch.save): a temporary name beside it, renamed
  at the end; nothing is left at the destination on failure.
- A full disk is one line naming the path (:class:`DiskFullError`, :func:`full_disk_named`), after which the
  tracebacks of background writer threads are silenced (:func:`silence_background_threads`).
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as err:  # name the destination, not the temporary name it was about to get
        if is_disk_full(err):
            raise disk_full_error(final, "nothing was written") from None
        raise OSError(err.errno, f"cannot write {final}: {err.strerror or err}") from None
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


class DiskFullError(OSError):
    """A write failed for want of space (an ``OSError`` with ENOSPC, so callers that handle a full disk still
    recognise it); its message names the path and what was kept."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_error(path: str | os.PathLike, what: str) -> DiskFullError:
    """The one-line error of a full disk while writing ``path``: ``what`` says what was (not) written."""
    return DiskFullError(f"no space left on {path}: {what}; free space and rerun the same command")


@contextlib.contextmanager
def full_disk_named(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a full-disk error raised in the block (an ``OSError`` without a path, a library's own text for it)
    into :class:`DiskFullError` naming ``path``; ``what`` says what was (not) written."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if is_disk_full(err):
            silence_background_threads()
            raise disk_full_error(path, what) from err
        raise


class _MainThreadStderr:
    """``sys.stderr`` that passes what the main thread writes and drops what other threads write."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self._stream.write(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _HeldThreadStderr(_MainThreadStderr):
    """``sys.stderr`` that passes the main thread's writes and holds other threads' until :func:`hold_background_output`
    decides: replayed after a write that succeeded, dropped after one that failed."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.held: list[str] = []

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self._stream.write(text)
        self.held.append(text)
        return len(text)


@contextlib.contextmanager
def hold_background_output() -> Iterator[None]:
    """Around a write that library threads carry out (orbax, TensorStore, their asyncio loops): what those threads
    print to stderr is held. If the write succeeds it is printed afterwards, unchanged; if it fails, the command
    stops with one line and the threads' tracebacks (they fail on the same full disk, sometimes before the main
    thread has caught the error) are dropped, as :func:`silence_background_threads` does from then on."""
    original = sys.stderr
    holder = _HeldThreadStderr(original)
    sys.stderr = holder
    try:
        yield
    except BaseException:
        holder.held.clear()
        silence_background_threads()  # the holder stays in place: later thread output is dropped too
        raise
    if sys.stderr is holder:
        sys.stderr = original
    if holder.held:
        original.write("".join(holder.held))


def silence_background_threads() -> None:
    """After a write failure the command stops with one line, but writer threads (orbax's, TensorStore callbacks,
    asyncio loops being shut down) may go on failing while the process exits and print their tracebacks. From now
    on what other threads write to stderr is dropped (their errors go to the debug log); the main thread, which
    prints the one-line error, is untouched."""

    def quiet_hook(args: Any) -> None:
        log.debug("background thread %s failed after a write failure: %r", args.thread, args.exc_value)

    def quiet_unraisable(args: Any) -> None:  # e.g. a library's atexit flush failing on the same full disk
        log.debug("ignored after a write failure: %r", args.exc_value)

    threading.excepthook = quiet_hook
    sys.unraisablehook = quiet_unraisable
    logging.getLogger("asyncio").addFilter(lambda record: not record.exc_info)
    if not isinstance(sys.stderr, _MainThreadStderr):
        sys.stderr = _MainThreadStderr(sys.stderr)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` ending like it (``.x.tmp-<random>.nii.gz`` for ``x.nii.gz``, so writers
    that choose the format by extension still do) to write the whole file to; on success it is renamed onto
    ``path``, so readers and a crash at any moment see the old file or the complete new one (a kill leaves a stale
    ``.x.tmp-*`` at most). On failure the temporary file is removed (nothing is left at ``path``), and a full disk
    becomes :class:`DiskFullError` naming ``path``."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, "nothing was written") from None
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; give what open() would
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("atomic_file")  # tests: a kill with the file written but not yet in place
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, "the file was not written (nothing is left there)") from None
        raise
    fsync_dir(path.parent)


def write_file_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


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
        # an error raised ``from None`` has already been reported in its own words: its context is not looked at
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return False
