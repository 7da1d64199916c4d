"""The agent's exit detection per tick at N running sandboxes (issue 14 target 3/5): what the
sync loop pays 20 times a second with nothing happening, before and after agent/exits.py.

Before: a stat() of each running sandbox's exit.json per tick (the agent's old
_ended_sandboxes, pathlib as it was). After: ExitWatch.ended(), one poll() over the held pidfds.
Both against the same N state directories (state.json of one live `sleep`: N pidfds of one
process poll the same as N processes' would), CPU time of this thread per tick (thread_time:
less moved by the machine's load than wall time), median of --ticks. Also ExitWatch.running(),
what `ps` through the agent pays instead of two files and /proc per sandbox (shim.status, timed too).

    sudo /opt/podnet/venv/bin/python bench/agent_tick.py [--sandboxes 1000] [--ticks 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from podnet.agent.exits import ExitWatch  # noqa: E402
from podnet.runtime import process, shim  # noqa: E402


def per_call(fn, ticks: int) -> float:
    """Median CPU µs of one call."""
    samples = []
    for _ in range(ticks):
        t = time.thread_time()
        fn()
        samples.append((time.thread_time() - t) * 1e6)
    return statistics.median(samples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sandboxes", type=int, default=1000)
    p.add_argument("--ticks", type=int, default=200)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.sandboxes + 4096), hard))  # as the agent does
    sleeper = subprocess.Popen(["sleep", "600"])
    load = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp)
            ids = [f"{i:064x}" for i in range(args.sandboxes)]
            record = json.dumps({"pid": sleeper.pid, "pid_start": process.start_time(sleeper.pid), "started_at": time.time()})
            for i in ids:
                (run / "sandboxes" / i).mkdir(parents=True)
                (run / "sandboxes" / i / "state.json").write_text(record)
            watch = ExitWatch(lambda i: str(run / "sandboxes" / i))
            watch.follow(ids)
            try:
                before = per_call(lambda: [i for i in ids if (run / "sandboxes" / i / "exit.json").exists()], args.ticks)
                after = per_call(watch.ended, args.ticks)
                held = per_call(watch.running, args.ticks)
                files = per_call(lambda: [shim.status(str(run / "sandboxes" / i)) for i in ids], max(5, args.ticks // 20))
            finally:
                watch.close()
    finally:
        sleeper.kill()
        sleeper.wait()
    print(f"{args.sandboxes} running sandboxes, CPU µs per call (median of {args.ticks}); load {load[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"exit check per tick, before (stat of each exit.json): {before:9.0f} µs = {before * 20 / 1e4:5.2f}% of a core at 20 ticks/s")
    print(f"exit check per tick, after (one poll() of the pidfds):  {after:9.0f} µs = {after * 20 / 1e4:5.2f}% of a core")
    print(f"running states for ps: from the pidfds {held:.0f} µs; from the files (shim.status each) {files:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
