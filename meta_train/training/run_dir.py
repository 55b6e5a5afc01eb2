"""A run directory: what marks it as holding a run, and the lock that keeps it to one process.

``RunLock(run_dir)`` takes an exclusive ``fcntl.flock`` on ``run_dir/.lock``
and writes its PID there. The OS releases the lock when the process ends,
however it ends, so a killed run never blocks the next one; a second process
asking for a held lock gets ``RunInUseError`` naming the holder's PID.
Meta-training holds it for the whole run (fresh or resumed), and export
takes it to read a run's checkpoints.
"""

from __future__ import annotations

import fcntl
import os
import pathlib

RUN_FILES = ("checkpoints", "metrics.jsonl", "config.toml")
# The command lines that started and resumed the run, one per line (written by
# `lopt meta-train`; a Python ``train`` call without ``command`` writes none).
COMMANDS_FILE = "commands.txt"


class RunInUseError(RuntimeError):
    """Another process holds the run directory's lock."""


class RunExistsError(RuntimeError):
    """A fresh run was asked for in a directory that holds one."""


def holds_run(run_dir: pathlib.Path) -> bool:
    """Whether ``run_dir`` holds any file of a run (never overwritten by a fresh one)."""
    return any((run_dir / name).exists() for name in RUN_FILES)


class RunLock:
    def __init__(self, run_dir: str | pathlib.Path):
        self.path = pathlib.Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunInUseError(
                f"{self.path.parent} is in use by process {holder} (another lopt meta-train, "
                "resume or export); wait for it to finish or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
