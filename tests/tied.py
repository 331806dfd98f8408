"""Child processes that end with their test: the test's Popen(..., preexec_fn=tied()) children
get SIGTERM when the test dies, even by SIGKILL (ctest's timeout), which runs no cleanup."""
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def tied():
    parent = os.getpid()

    def tie():
        # runs in the child before exec; a parent gone before prctl took effect shows as a
        # changed parent
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0 or \
                os.getppid() != parent:
            os._exit(127)
    return tie
