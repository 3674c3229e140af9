"""Stopping a long run from outside: SIGTERM (``kill PID``, a job scheduler) handled as Ctrl-C is.

Python turns SIGINT into ``KeyboardInterrupt``, so ``finally`` blocks and ``except`` clauses clean
up (staged folders removed, worker pools terminated); SIGTERM by default kills the process on the
spot. Within :func:`sigterm_interrupts` it raises :class:`Terminated`, a ``KeyboardInterrupt``, so
the same code handles both. Standard library only: the command line imports it before torch.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM received; ``signum`` gives the conventional exit code ``128 + signum``."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_interrupts():
    """Within: SIGTERM raises :class:`Terminated` in the main thread (elsewhere, where Python cannot
    install handlers, nothing changes); the previous handler is restored on exit. A SIGTERM the
    process was started with ignored stays ignored, as Python leaves an ignored SIGINT."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT), 143 for SIGTERM: the shell's ``128 + signal number``."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))
