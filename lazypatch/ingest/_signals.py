"""SIGTERM and SIGHUP as an exception while a store is written, so that it cleans up.

NOTE [termination]: Python turns SIGINT into KeyboardInterrupt, and the
writers remove their temporary files on any exception; but SIGTERM (``kill``,
a job scheduler, ``docker stop``) and SIGHUP (a closed terminal) end the
process at once by default, leaving hidden ``.OUT.h5.<pid>-<host>.<random>.tmp``
and spool files behind. While ``write_store`` or ``build`` runs in the main
thread, each of these signals whose handler is still the default raises
``Terminated`` instead; the previous handlers are restored afterwards. A
handler someone else installed is left alone, and threads other than the
main one (where Python cannot install handlers) keep the default.

``Terminated`` is a ``SystemExit`` whose code is 128 + the signal number, the
status a shell reports for a process killed by that signal: uncaught, the
process ends with 143 (SIGTERM) or 129 (SIGHUP) after the clean-up, without a
traceback, and ``except Exception`` does not swallow it. The ``lazypatch``
command prints one line and returns that status.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading

__all__ = ["Terminated", "termination_as_exception", "cleans_up_on_termination"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(SystemExit):
    """SIGTERM or SIGHUP arrived while a store was being written (its files are removed)."""

    def __init__(self, signum: int):
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


@contextlib.contextmanager
def termination_as_exception():
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` (NOTE [termination])."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = []

    def handler(signum, frame):
        if raised:  # the clean-up of the first one is running: let it finish
            return
        raised.append(signum)
        raise Terminated(signum)

    previous = {}
    for signum in SIGNALS:
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                previous[signum] = signal.signal(signum, handler)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            continue
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def cleans_up_on_termination(function):
    """Run ``function`` under ``termination_as_exception``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with termination_as_exception():
            return function(*args, **kwargs)

    return wrapper
