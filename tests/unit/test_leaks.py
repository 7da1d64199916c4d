"""The end of a test run fails it when the run left a process behind, and never blames a
process the run did not start (tests/leaks.py, tests/programs/reaper.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import PY, program, wait_for

REPO = Path(__file__).resolve().parents[2]

LEAKY = '''
import subprocess
import time
from pathlib import Path

def test_starts_a_daemon_and_forgets_it():
    # the shell exits at once: its sleep is an orphan, as a daemon that forked twice is
    pid = subprocess.run(["sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!"], check=True,
                         capture_output=True, text=True).stdout.strip()
    for _ in range(200):  # until the child has exec'd sleep (the report names what runs)
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
            break
        time.sleep(0.05)
'''
TIDY = '''
def test_starts_nothing():
    assert True
'''


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def run_session(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """A pytest session as test.sh runs one: below the reaper, with this suite's conftest hooks."""
    (tmp_path / "test_session.py").write_text(text)
    return subprocess.run([PY, "-S", program("reaper.py"), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path / "test_session.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"})


def test_a_process_left_by_the_run_fails_it_and_is_removed(tmp_path: Path) -> None:
    # A process this run did not start, running all along: it must not be blamed or touched.
    outsider = subprocess.Popen(["sleep", "600"])
    try:
        tidy = run_session(tmp_path, TIDY)
        assert tidy.returncode == 0 and "leftovers" not in tidy.stdout, tidy.stdout + tidy.stderr
        leaky = run_session(tmp_path, LEAKY)
        assert leaky.returncode == 1, leaky.stdout + leaky.stderr
        assert "1 passed" in leaky.stdout, "the test itself passed: the run fails for what it left"
        found = re.search(r"process (\d+): sleep 600", leaky.stdout)
        assert found and "the test run left these behind (now removed)" in leaky.stdout, leaky.stdout
        wait_for(lambda: _gone(int(found.group(1))), 10, "the leftover sleep to be killed")
        assert outsider.poll() is None, "the process outside the run still runs"
    finally:
        outsider.kill()
        outsider.wait()
