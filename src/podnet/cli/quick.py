"""`podnet rm [-f] NAME...`, `podnet stop [-t SECONDS] NAME...` and `podnet ps [-a] [-q] [--json]`
handed to the agent without argparse: the commands a user types most after `run`, whose own
work in the agent is ~10 ms.

argparse, the `re` it imports and the parser module cost ~10 ms of such a command on an idle
machine and ~60 ms at load 10 (measured in bench/run_docker.py's Host), more than the agent's
removal itself; the json package costs another `re` (agent/client.py writes and reads the
bodies without it). So main() asks this module first: a plain form of these two commands,
with the agent answering, is done here. Anything else (another flag or spelling, a name
that starts with "-", --help, no agent, another --root or store flag before the command)
returns None and goes through the full parser, which prints every message as before: this
module never prints an error of its own.

`ps` prints what cli/cmd_ps.py prints of the agent's rows, with its functions: only the flags
are read here (`ps` takes no other argument), and the table needs neither argparse nor json.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RM_FLAGS = {"-f": "force", "--force": "force"}
STOP_TIME_FLAGS = ("-t", "--time")
STOP_DEFAULT_TIME = 10  # parser.py's default for stop's -t, an int there too (the same JSON)


PS_FLAGS = {"-a": "all", "--all": "all", "-q": "quiet", "--quiet": "quiet", "--json": "json"}
PS_SHORT = {"a": "all", "q": "quiet"}  # argparse reads -aq as -a -q


class PsFlags:
    """What cli/cmd_ps.py reads of the parser's namespace for `ps`: its flags, no --root."""

    root = None

    def __init__(self) -> None:
        self.all = self.quiet = self.json = False


def ps_flags(words: list[str]) -> PsFlags | None:
    """The flags of `ps WORDS...`, or None for anything else the parser would take or refuse
    (an abbreviation like --al, --help, an argument, a flag given a value)."""
    flags = PsFlags()
    for word in words:
        if word in PS_FLAGS:
            setattr(flags, PS_FLAGS[word], True)
        elif len(word) > 2 and word[0] == "-" and all(letter in PS_SHORT for letter in word[1:]):
            for letter in word[1:]:
                setattr(flags, PS_SHORT[letter], True)
        else:
            return None
    return flags


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
    if argv[0] == "ps":
        return _ps(argv[1:])
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


def _ps(words: list[str]) -> int | None:
    """`ps` with the agent's rows; None when the flags are not plain or the agent does not
    answer (the full parser's path reads them in-process, or prints the parser's error)."""
    flags = ps_flags(words)
    if flags is None:
        return None
    from podnet.cli import cmd_ps  # lazy: render and the agent's client, for this command only

    rows = cmd_ps.ps_rows_of_agent(flags)
    if rows is None:
        return None
    cmd_ps.print_ps(flags, rows)
    return 0
