"""Worker processes that do not outlive their supervisor.

With ``--workers N`` uvicorn's supervisor spawns the workers; were it killed with SIGKILL, they would keep serving
and writing, holding the port (a restart then fails with "Address already in use"). Each worker therefore asks the
kernel (Linux ``PR_SET_PDEATHSIG``) for SIGKILL when its parent dies, and exits at once if that already happened.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger("coact_verl.oracle")
_PR_SET_PDEATHSIG = 1
SUPERVISOR_PID_ENV = "COACT_ORACLE_SUPERVISOR_PID"  # set by the supervisor for its workers


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Have this process killed when its parent dies; returns whether the kernel took the request."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        ok: bool = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("could not tie this worker's life to its supervisor's")
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(1)
    return ok


__all__ = ["SUPERVISOR_PID_ENV", "die_with_parent"]
