"""verify and signals: SIGINT, SIGTERM and SIGHUP held back while a step that must finish
runs (creating and recording a namespace, removing the bed), SIGTERM and SIGHUP turned
into KeyboardInterrupt around a run so that every finally block runs, and Interrupted,
which tells the command line what a stopped run left behind.
"""

from __future__ import annotations

import signal

CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal stopped verify; `left` names the namespaces that could not go."""

    def __init__(self, started: bool, left: list[str]):
        super().__init__("interrupted")
        self.started, self.left = started, left


class _deferred_signals:
    """Hold SIGINT, SIGTERM and SIGHUP until the block is done (then they arrive),
    so that a step that must finish (creating and recording a namespace, removing
    the bed) is never cut in half."""

    def __enter__(self):
        self.old = (
            signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT) if _main_thread() else None
        )

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


class signals_raise:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every finally block still runs."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self.old = {}
        if _main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._raise)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    @staticmethod
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
