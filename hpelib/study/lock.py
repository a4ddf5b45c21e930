"""One study runner per results folder: an exclusive lock on ``<out>/.study.lock`` while a study runs.

Two runners writing into one folder would train the same runs twice, or mix
the runs of two studies (one run's settings beside another's history). The
lock is an ``fcntl.flock`` on the lock file, which the operating system
releases when its holder exits however it exits, so a lock left by a runner
that was killed is taken over at once; the file records the holder's PID,
host, start time and study file, for the message a second runner gets. On a
file system without ``flock`` the record alone decides: a holder on this host
whose PID no longer runs is stale.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .schema import StudyError

__all__ = ["StudyLock", "LOCK_FILE"]

LOCK_FILE = ".study.lock"


class StudyLock:
    """``with StudyLock(out, study_file):`` holds the results folder ``out`` for this process."""

    def __init__(self, out, study_file: str):
        self.path = Path(out) / LOCK_FILE
        self.study_file = study_file
        self._file = None
        self.previous: dict | None = None  # the record of a stale lock that was taken over

    def __enter__(self) -> "StudyLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            self._acquire(f)
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "study": self.study_file,
                            "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()  # a runner that ended leaves no record: the next one takes over silently
            self._file.close()  # closing releases the flock
            self._file = None

    def _acquire(self, f) -> None:
        record = _read_record(f)
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            raise StudyError(self._busy_message(record)) from None
        except (ImportError, OSError):  # no flock here: judge by the record
            if record and _alive_here(record):
                raise StudyError(self._busy_message(record)) from None
        if record and record.get("pid") != os.getpid():
            self.previous = record

    def _busy_message(self, record: dict | None) -> str:
        who = (f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')} "
               f"(study {record.get('study')})") if record else "another process"
        return (f"results folder {self.path.parent} is in use by another study runner: {who}. "
                "Wait for it to finish, or pass another --out.")


def _read_record(f) -> dict | None:
    f.seek(0)
    try:
        record = json.loads(f.read() or "null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _alive_here(record: dict) -> bool:
    """The holder runs on this host and its PID is alive (elsewhere: assumed alive)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        return True
    return True
