"""Stopping long work the way clusters stop it: SIGTERM and SIGHUP act like Ctrl-C.

SLURM (time limit, preemption, ``scancel``), ``timeout``, ``docker stop`` and
systemd stop a process with SIGTERM, then SIGKILL after a grace period; a
closed terminal sends SIGHUP. Inside :func:`stop_on_signals` the first of them
raises :class:`Interrupted` (a ``KeyboardInterrupt``, so every Ctrl-C path
handles it) and later ones are ignored while the program cleans up; the
command then exits with ``128 + signal number`` (130, 143, 129), as a shell does.

A training loop also stops on :data:`SLURM_WARNING` (SIGUSR2): the signal that
submitit's jobs ask SLURM to send before their time limit and on preemption
(``#SBATCH --signal=USR2@<lead>``). SLURM sends it to every process of the job
step, the notebook's kernel included, whose default action would be to die.
"""
from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["Interrupted", "STOP_SIGNALS", "SLURM_WARNING", "stop_on_signals", "handling", "exit_status", "signal_name"]

#: what stops a command like Ctrl-C
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
#: the warning before a SLURM job's time limit (submitit's choice), None where the platform has no SIGUSR2
SLURM_WARNING = getattr(signal, "SIGUSR2", None)


class Interrupted(KeyboardInterrupt):
    """The command was told to stop by ``signum`` (SIGINT, SIGTERM or SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(error: BaseException) -> int:
    """``128 + signal``: 130 for Ctrl-C (a plain ``KeyboardInterrupt`` too), 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def signal_name(error: BaseException) -> str:
    return signal.Signals(getattr(error, "signum", signal.SIGINT)).name


@contextlib.contextmanager
def handling(signals, handler):
    """``handler`` for ``signals`` inside the block, the previous handlers again after it.

    Only the main thread may set handlers: elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_on_signals(signals=STOP_SIGNALS):
    """The first of ``signals`` raises :class:`Interrupted`; the ones after it are ignored (in the main thread only)."""
    first: list[int] = []

    def handler(signum, frame):
        if not first:
            first.append(signum)
            raise Interrupted(signum)

    with handling(signals, handler):
        yield
