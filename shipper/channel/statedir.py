"""The state directory: where it is by default, and the lock that gives it to one agent.

Everything flume-ship must remember across restarts lives in one directory (``--state-dir``):
the channel database (events plus the tail offsets, see :mod:`shipper.channel`) and a lock file.

Default location (:func:`default_state_dir`):

* root: ``/var/lib/flume-ship`` (the FHS place for a daemon's state);
* any other user: ``$XDG_STATE_HOME/flume-ship`` when that variable holds an absolute path,
  else ``~/.local/state/flume-ship`` (the XDG Base Directory default for state).

The directory must belong to this user and must not be writable by others (:func:`prepare_state_dir`
refuses it otherwise: whoever can write there can replace the channel or plant a symlink), and
every file in it is private: the lock file is opened without following a symlink (a planted
``lock -> /etc/something`` would otherwise be truncated and overwritten with our pid), and
:func:`protect_state_files` refuses symlinks among the state files and narrows their modes to
0600 (a database created under a loose umask, or an older version's files).

The lock (:class:`StateLock`) is ``flock(LOCK_EX | LOCK_NB)`` on ``<dir>/lock``. flock, not
fcntl record locks, because flock belongs to the open file: a second opener conflicts even inside
the same process, and closing some unrelated descriptor on the file never drops it. The kernel
releases it when the holder dies, so a crash never leaves a stale lock behind; the pid written
into the file is only there to name the holder in the error message (on a full filesystem it is
simply not written).

The space reserve (:class:`SpaceReserve`) is a file of real, allocated blocks (``posix_fallocate``,
or zeros written where that is not supported; never a sparse file) that the channel keeps beside
its database. Deleting it is the one way to get room back on a filesystem that something else
filled: the channel does so when a write fails with ENOSPC, so that acknowledgements (which FREE
space, but need a few WAL pages first) and the checkpoint that shrinks the database can still run,
and again before it opens the database, so that SQLite finds room for its ``-shm`` file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from shipper.errors import StateError, StateLocked

LOCK_NAME = "lock"


def default_state_dir() -> Path:
    """The state directory to use when ``--state-dir`` is not given."""
    if os.geteuid() == 0:
        return Path("/var/lib/flume-ship")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "flume-ship"
    return Path.home() / ".local" / "state" / "flume-ship"


def prepare_state_dir(path: str | os.PathLike) -> Path:
    """Create the directory (private: it holds log lines) and check that we can write in it."""
    path = Path(path).expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create state directory {path}: {exc.strerror or exc}; choose another with --state-dir"
        ) from exc
    if not path.is_dir():
        raise StateError(f"state directory {path} is not a directory; choose another with --state-dir")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"state directory {path} is not writable by this user; choose another with --state-dir")
    check_state_dir_owner(path)
    return path


def check_state_dir_owner(path: Path) -> None:
    """StateError unless ``path`` belongs to this user and others cannot write in it."""
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise StateError(
            f"state directory {path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}): whoever owns "
            f"it can read or replace the channel; chown it to this user or choose another with --state-dir"
        )
    if st.st_mode & stat.S_IWOTH:
        raise StateError(
            f"state directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): anyone could "
            f"replace the channel; run chmod o-w {path} (0700 is best) or choose another with --state-dir"
        )


def protect_state_files(path: Path, names: tuple[str, ...]) -> None:
    """Refuse a symlink among the state files ``names``; narrow a file's mode to 0600."""
    for name in names:
        file = path / name
        try:
            st = os.lstat(file)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise StateError(f"{file} is a symbolic link; state files must be plain files: remove it")
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            try:
                os.chmod(file, 0o600, follow_symlinks=False)
            except OSError as exc:
                raise StateError(f"cannot make {file} private (chmod 600): {exc.strerror or exc}") from exc


def fsync_dir(path: str | os.PathLike) -> None:
    """Make file creations and renames inside ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateLock:
    """An exclusive, non-blocking lock on a state directory, held until :meth:`release`."""

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateError(f"lock file {self.path} is a symbolic link; remove it (flume-ship creates its "
                                 "own)") from exc
            raise StateError(f"cannot open lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder()
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"another flume-ship (pid {holder})" if holder else "another flume-ship"
                raise StateLocked(
                    f"state directory {self.state_dir} is in use by {who}; stop it, "
                    f"or give this agent its own --state-dir"
                ) from exc
            raise StateError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        # Only a hint for the message above; written after we hold the lock. A full filesystem
        # must not stop an agent from starting (and freeing space): the hint is then left out.
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def _holder(self) -> str:
        try:
            return os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class SpaceReserve:
    """A file of ``size`` allocated bytes at ``path``: :meth:`release` it to get that room back at
    once, :meth:`create` it again when there is room. Neither ever raises for lack of space."""

    _ZEROS = bytes(64 * 1024)

    def __init__(self, path: str | os.PathLike, size: int):
        self.path = Path(path)
        self.size = size

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_blocks * 512 >= self.size
        except OSError:
            return False

    def release(self) -> bool:
        """Delete the reserve; True if there was one (its blocks are free now)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True

    def create(self) -> bool:
        """Allocate the reserve; False (and nothing left behind) when the filesystem has no room."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                self._write_zeros(fd)  # a filesystem without fallocate: real blocks all the same
        except OSError:
            os.close(fd)
            self.release()
            return False
        os.close(fd)
        return True

    def _write_zeros(self, fd: int) -> None:
        left = self.size
        while left > 0:
            left -= os.write(fd, self._ZEROS[:min(left, len(self._ZEROS))])
