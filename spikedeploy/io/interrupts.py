"""SIGTERM as an exception, so that the cleanup that runs on Ctrl-C (removing a temporary output file,
stopping Lava's runtime and its worker processes) also runs when a job is terminated.

Without a handler, SIGTERM ends the process at once: no `finally` block runs, the temporary file of an
atomic write stays beside its target, and Lava's workers (separate processes) are orphaned.
"""

from __future__ import annotations

import signal


class Terminated(BaseException):
    """The process received SIGTERM. A BaseException, like KeyboardInterrupt, so that `except Exception`
    clauses do not swallow it on its way out."""


def _raise_terminated(signum, frame) -> None:
    # the cleanup runs once; a second SIGTERM (an impatient supervisor) ends the process at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def install_sigterm_handler() -> None:
    """Make SIGTERM raise Terminated in the main thread (only the main thread may install handlers)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
