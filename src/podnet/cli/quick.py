"""`podnet rm [-f] NAME...` and `podnet stop [-t SECONDS] NAME...` handed to the agent without
argparse: the commands a user types most after `run`, whose own work in the agent is ~10 ms.

argparse, the `re` it imports and the parser module cost ~10 ms of such a command on an idle
machine and ~60 ms at load 10 (measured in bench/run_docker.py's Host), more than the agent's
removal itself; the json package costs another `re` (agent/client.py writes and reads the
bodies without it). So main() asks this module first: a plain form of these two commands,
with the agent answering, is done here. Anything else (another flag or spelling, a name
that starts with "-", --help, no agent, another --root or store flag before the command)
returns None and goes through the full parser, which prints every message as before: this
module never prints an error of its own.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RM_FLAGS = {"-f": "force", "--force": "force"}
STOP_TIME_FLAGS = ("-t", "--time")
STOP_DEFAULT_TIME = 10  # parser.py's default for stop's -t, an int there too (the same JSON)


def _plain_number(text: str) -> bool:
    """Digits with at most one dot: what float() reads the same way argparse's type=float does.
    Any other spelling (a sign, an exponent, inf) is left to the full parser."""
    return text.replace(".", "", 1).isdigit() and text.isascii()


def plan(argv: list[str]) -> tuple[str, list[str], dict[str, Any], float] | None:
    """(agent path, names, the body's other fields, timeout) of argv, or None when argv is not
    one of the plain forms: flags first, then one or more names."""
    command, words = argv[0], argv[1:]
    fields: dict[str, Any]
    if command == "rm":
        fields = {"force": False}
        while words and words[0] in RM_FLAGS:
            fields[RM_FLAGS[words.pop(0)]] = True
        path, timeout = "/v1/sandboxes/rm", 120.0
    elif command == "stop":
        fields = {"time": STOP_DEFAULT_TIME}
        while words and (words[0] in STOP_TIME_FLAGS or words[0].startswith("--time=")):
            flag = words.pop(0)
            value = flag.partition("=")[2] if "=" in flag else (words.pop(0) if words else "")
            if not _plain_number(value):
                return None
            fields["time"] = float(value)
        path, timeout = "/v1/sandboxes/stop", fields["time"] + 60
    else:
        return None
    if not words or any(not name or name.startswith("-") for name in words):
        return None
    return path, words, fields, timeout


def through_agent(argv: list[str]) -> int | list[str] | None:
    """Do argv through the agent: its exit code; None when it is not a plain form or no agent
    answers (main parses it fully and runs it in-process); or, when the agent went away after
    some names were done, the argv of the names left, for main to run the same way.

    A refusal of the agent raises the PodnetError cmd_sandbox would raise: main prints it."""
    planned = plan(argv)
    if planned is None:
        return None
    path, names, fields, timeout = planned
    from podnet.agent import client  # lazy: not for the other commands

    for done, name in enumerate(names):
        answer = client.forward("POST", path, {"name": name, **fields}, timeout=timeout)
        if answer is None:
            return None if done == 0 else argv[: len(argv) - len(names)] + names[done:]
        print(answer["name"])
    return 0
