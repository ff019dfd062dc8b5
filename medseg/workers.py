"""Worker processes die with the process that started them: no loader or pool worker outlives a kill -9 of
``medseg train`` / ``predict`` / ``preprocess``. Imports nothing from medseg (``medseg.atomic`` asks it whether a
temporary file's writer is still running)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_SECONDS = 1.0


def process_alive(pid: int) -> bool:
    """True when process ``pid`` exists and has not exited (a zombie, dead but not yet reaped, counts as gone)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            state = stream.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill said it exists
    return state not in (b"Z", b"X")


def _set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``: the kernel sends ``signum`` to this process when the thread that
    created it exits. False where there is no prctl (not Linux) or the call fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """Fallback without prctl: exit as soon as this process is re-parented (its parent died)."""
    while os.getppid() == parent:
        time.sleep(_POLL_SECONDS)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Make this worker process die when ``parent_pid`` (the medseg process that started it; pass
    ``os.getpid()`` from there) dies, even by SIGKILL; exit at once if it is already gone.

    For ``ProcessPoolExecutor(initializer=die_with_parent, initargs=(os.getpid(),))`` and, through
    :func:`init_loader_worker`, a torch ``DataLoader``'s ``worker_init_fn``. On Linux the kernel kills the worker
    (``PR_SET_PDEATHSIG``) when its actual parent exits: ``parent_pid`` itself under fork or spawn, or the
    forkserver, which exits when ``parent_pid`` does. The parent may die between the fork and this call, before
    the kernel watches: hence the check right after. Elsewhere a daemon thread polls ``os.getppid()`` once a
    second. Never raises (a failing initializer would break the pool).
    """
    armed = _set_parent_death_signal(signal.SIGKILL)
    parent = os.getppid()
    if parent != parent_pid and not process_alive(parent_pid):
        os._exit(1)  # orphaned before the kernel watched: nothing would ever collect our results
    if not armed:
        log.debug("no prctl on %s: watching the parent process %d by polling", sys.platform, parent)
        threading.Thread(target=_watch_parent, args=(parent,), name="medseg-parent-watch", daemon=True).start()


def init_loader_worker(parent_pid: int, worker_id: int) -> None:
    """``DataLoader(worker_init_fn=functools.partial(init_loader_worker, os.getpid()))``: see
    :func:`die_with_parent` (``worker_id`` is the loader's worker index, unused)."""
    die_with_parent(parent_pid)
