"""CLI start-up: `podnet version`, `ps` and `network ls` at 1 and at N running sandboxes (issue 14 target 3).

One `tests.sandbox.Host`, a bridge network, `podnet agent` running; sandboxes (`sleep`) are made
through the agent's API from one warm client (the CLI's own `run -d` is bench/run_docker.py's
row). Each command is a new process, as a user types it, through `python -m podnet` of the venv
(what every bench runs) and the venv's console script (/opt/podnet/venv/bin/podnet, what a user
types); median and min of --runs, and the median CPU time (user + system) of the command's
process, less moved by the machine's load than wall time (the agent's share of `ps` is not in
it). Anchor, same run: the interpreter itself (`python -c pass`), the floor no Python command
can go under. Targets: version <= 50 ms, ps and network ls <= 100 ms at 1,000 sandboxes.

With --against DIR (another checkout, e.g. /work/main), the same sandboxes are then listed by
each tree in turn, --rounds times: its agent restarted from that tree, then its commands; the
rounds alternate so that both trees meet the same load.

    sudo /opt/podnet/venv/bin/python bench/cli.py [--sandboxes 1000] [--runs 11] [--against DIR [--rounds 3]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SCRIPT = str(Path(sys.executable).with_name("podnet"))
COMMANDS = {"version": ["version"], "ps": ["ps"], "network ls": ["network", "ls"]}
TARGETS = {"version": 50.0, "ps": 100.0, "network ls": 100.0}


def samples(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[tuple[float, float]]:
    """(wall ms, CPU ms: user + system of the process) of argv run `runs` times."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        error = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        out.append(((time.perf_counter() - t) * 1e3, (usage.ru_utime + usage.ru_stime) * 1e3))
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{argv} exited {proc.returncode}: {error.decode().strip()}")
    return out


def timed(argv: list[str], runs: int, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(median, min) wall ms and median CPU ms of argv run `runs` times."""
    got = samples(argv, runs, env)
    return statistics.median(w for w, _ in got), min(w for w, _ in got), statistics.median(c for _, c in got)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process pid has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, seconds: float = 5.0) -> float:
    """The agent's CPU (user + system) over `seconds` with nothing asked of it, in % of one core:
    what its sync loop costs at rest (it looked for each sandbox's exit record 20 times a second)."""
    before, began = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round(100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - began), 1)


def row(runs: int) -> dict[str, object]:
    out: dict[str, object] = {"python -c pass": timed([sys.executable, "-c", "pass"], runs)}
    for name, args in COMMANDS.items():
        out[f"-m podnet {name}"] = timed([sys.executable, "-m", "podnet", *args], runs)
        if os.path.exists(SCRIPT):
            out[f"podnet {name}"] = timed([SCRIPT, *args], runs)
    return out


def start_agent(src: str) -> subprocess.Popen[bytes]:
    """`podnet agent` of the tree at src, once it answers."""
    from podnet.agent import client

    agent = subprocess.Popen([sys.executable, "-m", "podnet", "agent"], env={**os.environ, "PYTHONPATH": src},
                             stdout=subprocess.DEVNULL, stderr=open("/run/cli-agent.log", "a"))
    deadline = time.monotonic() + 120
    while not client.running():
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the agent did not come up")
        time.sleep(0.2)
    return agent


def alternate(args: argparse.Namespace, held: list[subprocess.Popen[bytes]]) -> dict[str, object]:
    """Each tree's agent and commands in turn, --rounds times: {tree: {command: [(wall, cpu)...]}}.
    held[0] is the running agent, replaced at each turn (the caller stops the last one)."""
    trees = {"this": str(REPO / "src"), "against": str(Path(args.against).resolve() / "src")}
    got: dict[str, dict[str, list[tuple[float, float]]]] = {tree: {} for tree in trees}
    for _ in range(args.rounds):
        for tree, src in trees.items():
            held[0].terminate()
            held[0].wait(timeout=60)
            held[0] = start_agent(src)
            time.sleep(2)  # its first sync settles
            env = {**os.environ, "PYTHONPATH": src}
            for name, argv in {"version": ["version"], "ps": ["ps"], "ps -a": ["ps", "-a"], "ps -q": ["ps", "-q"],
                               "ps --json": ["ps", "--json"]}.items():
                before = cpu_seconds(held[0].pid)
                got[tree].setdefault(name, []).extend(samples([sys.executable, "-m", "podnet", *argv], args.runs, env))
                # the agent's CPU per command, its idle share included (clock ticks: a mean of many)
                got[tree].setdefault(f"{name}: agent", []).append((cpu_seconds(held[0].pid) - before) * 1e3 / args.runs)
    return got


# ---- inside the Host ----------------------------------------------------------------------

def driver(args: argparse.Namespace) -> dict[str, object]:
    sys.path.insert(0, str(REPO / "src"))
    from podnet.agent import client

    podnet = [sys.executable, "-m", "podnet"]
    subprocess.run(podnet + ["network", "create", "bench", "--subnet", "10.80.0.0/20"], check=True, capture_output=True)
    agent = subprocess.Popen(podnet + ["agent"], stdout=subprocess.DEVNULL, stderr=open("/run/cli-agent.log", "w"))
    made = 0
    out: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 60
        while not client.running():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the agent did not come up")
            time.sleep(0.2)
        for count in (1, args.sandboxes):
            began = time.monotonic()
            while made < count:
                client.forward("POST", "/v1/sandboxes", {"argv": ["sleep", "1000000"], "networks": ["bench"],
                                                         "name": f"s{made}"})
                made += 1
            out[f"made {count} (s)"] = round(time.monotonic() - began, 1)
            time.sleep(2)  # the last run's sync settles
            out[f"agent idle cpu {count}"] = idle_cpu(agent.pid)
            out[str(count)] = row(args.runs)
        if args.against:
            held = [agent]
            try:
                out["alternate"] = alternate(args, held)
            finally:
                agent = held[0]
    finally:
        for i in range(made):
            client.forward("POST", "/v1/sandboxes/rm", {"name": f"s{i}", "force": True})
        agent.terminate()
        agent.wait(timeout=60)
    out["left"] = subprocess.run(podnet + ["ps", "-aq"], capture_output=True, text=True).stdout.split()
    return out


# ---- outside: the Host, the table ---------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sandboxes", type=int, default=1000, help="running sandboxes of the second row")
    p.add_argument("--runs", type=int, default=11, help="samples of each command")
    p.add_argument("--against", metavar="DIR", help="another checkout to time in turn with this one, same sandboxes")
    p.add_argument("--rounds", type=int, default=3, help="turns of each tree with --against")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")  # this tree, whatever the venv was installed from
    from bench.bytecode import cached
    from tests.sandbox import Host

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with cached(REPO / "src"), Host("clibench") as host:
        if args.against:  # its bytecode too, under the same private prefix
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(args.against).resolve() / "src")], check=True)
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver", *sys.argv[1:]], timeout=7200)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"CLI start-up, median / min wall ms of {args.runs} (and median CPU ms, user + system, of the "
          f"command's process); anchor: the interpreter (python -c pass)")
    print(f"{'command':28} {'1 sandbox':>22} {str(args.sandboxes) + ' sandboxes':>24} {'target':>8}")
    for key in res["1"]:
        one, many = res["1"][key], res[str(args.sandboxes)][key]
        name = key.split(" ", 2)[-1] if key.startswith("-m") else key.removeprefix("podnet ")
        target = TARGETS.get(name)
        verdict = "" if target is None or key == "python -c pass" else (
            f"{target:5.0f}: {'met' if many[0] <= target else 'NOT met'}")
        print(f"{key:28} {one[0]:7.1f} / {one[1]:6.1f} ({one[2]:5.1f}) {many[0]:8.1f} / {many[1]:7.1f} ({many[2]:5.1f})  {verdict}")
    if args.against:
        print(f"\nsame run, {args.sandboxes} sandboxes, each tree's agent and `python -m podnet` in turn "
              f"({args.rounds} rounds of {args.runs}): median wall / CPU ms; against = {args.against}")
        print(f"{'command':14} {'this':>16} {'against':>16} {'wall ratio':>11} {'CPU ratio':>10}")
        for name in res["alternate"]["this"]:
            if name.endswith(": agent"):
                continue
            this, other = (res["alternate"][tree][name] for tree in ("this", "against"))
            (tw, tc), (ow, oc) = ([statistics.median(x[i] for x in s) for i in (0, 1)] for s in (this, other))
            ta, oa = (statistics.mean(res["alternate"][tree][f"{name}: agent"]) for tree in ("this", "against"))
            print(f"{name:14} {tw:7.1f} / {tc:6.1f} {ow:7.1f} / {oc:6.1f} {tw / ow:10.2f}x {tc / oc:9.2f}x"
                  f"   agent CPU per command {ta:5.1f} vs {oa:5.1f} ms")
    print(f"agent's idle CPU (% of a core over 5 s): {res['agent idle cpu 1']} at 1 sandbox, "
          f"{res[f'agent idle cpu {args.sandboxes}']} at {args.sandboxes}")
    print(f"making {args.sandboxes} through the agent: {res[f'made {args.sandboxes} (s)']} s; "
          f"left behind: {res['left'] or 'none'}")
    print(f"load average before / after: {' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
