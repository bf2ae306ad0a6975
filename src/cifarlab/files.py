"""Writing files so that a crash, a full disk, a read-only folder or a second process never leaves
a half-written or mixed-up one.

Every file cifarlab writes (checkpoints, training states, results, predictions, configs, stores,
shards) goes through `atomic_write`: written to a temporary name in the same folder, flushed
to disk (``fsync``), optionally read back and checked, then renamed over the real name, and the
folder's entry fsynced too. A reader therefore sees the old file or the new one, never a mixture,
even after SIGKILL or a power cut (the pattern of SQLite's and safetensors' own writers; POSIX
``rename(2)`` is atomic within one file system).

A write that fails because the disk is full, a quota is reached, or the folder is read-only raises
`StorageError`, which names the path, the bytes the write needed and the bytes free.
`lock_folder` keeps a second process out of a run or suite directory in use.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Callable

TEMP_MARK = ".tmp-"
"""Temporary files are named ``.{name}.tmp-XXXX``; `remove_stale_temps` clears them after a crash."""

LOCK_FILE = ".lock"
"""Held by the process using a run or suite directory (`lock_folder`)."""

OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class StorageError(RuntimeError):
    """A write failed for lack of space or permission. ``path``, ``needed`` and ``free`` (bytes)
    are attributes; the message names them and the way out."""

    def __init__(self, message: str, path: Path | str = "", needed: int | None = None, free: int | None = None):
        super().__init__(message)
        self.path, self.needed, self.free = str(path), needed, free


class FolderInUse(RuntimeError):
    """Another live process holds a folder's lock (`lock_folder`); the message names it."""


def free_bytes(path: Path | str) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "an unknown number of bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def storage_error(e: OSError, path: Path | str, needed: int | None = None) -> StorageError | OSError:
    """The `StorageError` for an ``OSError`` from writing ``path``, or ``e`` itself when it
    is another kind of failure."""
    if e.errno in OUT_OF_SPACE:
        free = free_bytes(path)
        return StorageError(f"Out of space writing {path} ({e.strerror}; needs about {_size(needed)}, "
                            f"{_size(free)} free); free some space.", path, needed, free)
    if e.errno in NOT_WRITABLE:
        return StorageError(f"Cannot write {path}: {e.strerror}; make the folder writable or choose another one.",
                            path, needed, None)
    return e


def fsync_dir(folder: Path | str) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` gives a new file: 0o666 less the process's
    umask (read from ``/proc/self/status`` on Linux, where reading it changes nothing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path | str, writer: Callable[[str], None], needed: int | None = None,
                 verify: Callable[[str], None] | None = None, previous: Path | str | None = None) -> Path:
    """Write ``path`` all or nothing: ``writer(tmp)`` writes a temporary file beside it, which is
    fsynced, checked with ``verify(tmp)`` (which raises when the file is wrong) and renamed over ``path``.
    The file gets the mode a plain ``open()`` would give it (`new_file_mode`).

    Args:
        needed: the expected size in bytes, used in the message of a full disk.
        previous: where the file being replaced is kept (renamed, so a crash between the two renames
            leaves ``previous`` and no ``path``: readers fall back to ``previous``).

    Raises:
        StorageError: disk full / quota / read-only / permission denied (nothing replaced).
        Exception: whatever ``writer`` or ``verify`` raise (the temporary file is removed, ``path``
            untouched).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise storage_error(e, path, needed) from None
    try:
        writer(tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 (or a writer's own temporary's) would survive the rename
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        err = _os_error(e)
        if err is not None:
            raise storage_error(err, path, needed) from None
        raise
    fsync_dir(path.parent)
    return path


def _os_error(e: BaseException) -> OSError | None:
    """The ``OSError`` behind ``e``: itself, or the one a library reported in its own exception's text
    (safetensors' Rust writer says "... (os error 28)")."""
    if isinstance(e, OSError):
        return e
    m = re.search(r"\(os error (\d+)\)", str(e))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def write_text(path: Path | str, text: str) -> Path:
    """`atomic_write` of a UTF-8 text file."""
    data = text.encode()
    return atomic_write(path, lambda p: Path(p).write_bytes(data), needed=len(data))


def append_line(path: Path | str, line: str) -> None:
    """Append one line and fsync (an append of a whole line is what a crash can cut; readers skip
    a last line without its newline). Raises `StorageError` as `atomic_write`."""
    data = (line.rstrip("\n") + "\n").encode()
    try:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise storage_error(e, path, len(data)) from None


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder``; returns what was removed."""
    removed = []
    for p in Path(folder).glob(f".*{TEMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, what: str = "train"):
    """Hold ``folder/.lock`` while the block runs: one cifarlab process per run (or suite) directory.

    The lock is an exclusive ``flock(2)`` on the file, which the kernel drops when its process ends
    in any way (SIGKILL included), so a lock is never stale while its process lives and always
    stale once it is gone. The file holds the holder's pid, host, command and start time, for the
    message a second process gets. A lock file left by a dead process is taken over with a warning.

    Raises:
        FolderInUse: another live process holds the lock (the message gives its pid and host).
        StorageError: the lock file cannot be written (read-only folder, full disk).
    """
    import fcntl
    path = Path(folder) / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error(e, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = _read_lock(path)
            raise FolderInUse(
                f"{folder} is in use by another cifarlab process (pid {h.get('pid', '?')} on {h.get('host', '?')}, "
                f"'{h.get('command', '?')}' since {h.get('started', '?')}). Wait for it to end or stop it; two "
                "processes writing one run would mix their checkpoints.") from None
        try:  # the holder may have removed the file between our open and our flock: lock the live file
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    old = _read_lock(path)
    if old.get("pid") and not (old.get("host") == socket.gethostname() and old["pid"] == os.getpid()):
        alive = old.get("host") == socket.gethostname() and _pid_alive(int(old["pid"]))
        warnings.warn(f"{folder}: taking over the lock left by pid {old['pid']} on {old.get('host', '?')} "
                      f"('{old.get('command', '?')}' since {old.get('started', '?')}), which ended without "
                      f"releasing it{'' if not alive else ' (that pid is now another process)'}.", stacklevel=3)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
            "started": _dt.datetime.now().isoformat(timespec="seconds")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        raise storage_error(e, path) from None
    try:
        yield info
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
