"""Child processes that die with their launcher (Linux ``PR_SET_PDEATHSIG``).

The launcher puts its pid in ``SYNCHRONICITY_PARENT_PID``; the child asks the kernel for SIGTERM
when that parent dies, so a killed ``rebuild`` or a timed-out test leaves no servers behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "SYNCHRONICITY_PARENT_PID"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
