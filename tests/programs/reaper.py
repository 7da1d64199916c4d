"""The parent of a test run (test.sh starts pytest under it): a child subreaper, so that a
process a test started and that daemonised (`ip netns exec NS dnsmasq`, a supervisor that
forked twice) stays below the run instead of going to PID 1. tests/leaks.py then finds every
process the run started, and only those: the descendants of this process. It reaps them as
they exit (no zombie lingers), forwards SIGTERM and SIGHUP to pytest (Ctrl-C reaches pytest
by the terminal), and exits with pytest's exit code when pytest exits.

    python3 -S reaper.py PROGRAM [ARG...]
"""

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit(f"reaper: prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")
os.environ["PODNET_TEST_REAPER"] = str(os.getpid())
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends it to pytest too
for sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda number, _frame: os.kill(child, number))
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        sys.exit(1)
    except InterruptedError:
        continue
    if pid == child:
        sys.exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status))
