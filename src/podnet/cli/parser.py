"""The CLI's argparse parsers: podnet's own commands' flags, and the extension modules'.

Only the given command's parser is built (building every parser costs more than the rest of
a read command's start-up); `--help`, an unknown command or an abbreviated option build them all.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms of the start-up floor; annotations are strings here
    from typing import Any

from podnet.cli.main import _cmd_version

# argparse translates its own words ("usage: ", "options", ...) through gettext.gettext for
# every parser and help formatter it makes, and gettext looks for catalogues on disk on every
# call (gettext.find caches nothing): 21 calls and ~8 ms for `network ls` under load, with
# LANG=C.UTF-8. A word's translation cannot change within one process: each is looked up once.
argparse._ = functools.lru_cache(maxsize=None)(argparse._)  # type: ignore[attr-defined]


# Command groups that live in their own module: each has `register(subparsers)`, which adds
# its parsers with `set_defaults(handler=...)`; a module keeps its heavy imports inside the
# handlers so that registering costs nothing.
EXTENSIONS = ("podnet.cli.cmd_agent", "podnet.cli.cmd_cni", "podnet.cli.cmd_service", "podnet.cli.cmd_store",
              "podnet.cli.cmd_node", "podnet.cli.cmd_image", "podnet.cli.cmd_policy",
              "podnet.cli.cmd_observe", "podnet.cli.cmd_ingress", "podnet.cli.cmd_docker")

# The commands (aliases too) each extension module registers, so that a command of theirs
# builds that module's parsers alone: `apply -f` built every parser (~0.4 s under load)
# and imported every module's top. tests/unit/test_cli_lazy.py checks this against register().
EXTENSION_COMMANDS = {
    "agent": "podnet.cli.cmd_agent", "cni": "podnet.cli.cmd_cni", "docker-plugin": "podnet.cli.cmd_docker",
    "image": "podnet.cli.cmd_image", "ingress": "podnet.cli.cmd_ingress", "ing": "podnet.cli.cmd_ingress",
    "node": "podnet.cli.cmd_node", "store": "podnet.cli.cmd_store",
    **dict.fromkeys(("diagnose", "capture", "topology"), "podnet.cli.cmd_observe"),
    **dict.fromkeys(("namespace", "ns", "policy", "netpol", "trace", "flows"), "podnet.cli.cmd_policy"),
    **dict.fromkeys(("service", "svc", "apply", "delete"), "podnet.cli.cmd_service"),
}


# Placeholders in help texts for lists the drivers' registry holds (see _HelpFormatter).
DRIVERS_PLACEHOLDER = "{drivers}"
CNI_MODES_PLACEHOLDER = "{cni_modes}"


def _registry_lists() -> dict[str, tuple[str, ...]]:
    # lazy: importing podnet.drivers (every driver, and dataplane/ under them) costs more than
    # the whole start-up of a read command, which must not pay for it; only --help does.
    from podnet import drivers

    return {DRIVERS_PLACEHOLDER: drivers.DRIVER_NAMES, CNI_MODES_PLACEHOLDER: drivers.CNI_MODES}


_WIDTH: list[int] = []


def _help_width() -> int:
    """The terminal's width less 2, as argparse takes it, asked once per process: argparse
    makes a formatter for every add_argument (~40 for `run`), each of which asked again."""
    if not _WIDTH:
        try:
            width = int(os.environ.get("COLUMNS", "")) or 80
        except ValueError:
            try:
                width = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
            except (AttributeError, ValueError, OSError):
                width = 80
        _WIDTH.append(width - 2)
    return _WIDTH[0]


class _HelpFormatter(argparse.HelpFormatter):
    """Fills in the registry's lists of drivers and CNI modes only when help is printed.

    argparse makes a formatter for every add_argument, and its default width comes from
    shutil (~4 ms to import, with bz2 and lzma); the terminal's width is asked here directly.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and (DRIVERS_PLACEHOLDER in text or CNI_MODES_PLACEHOLDER in text):
            for placeholder, names in _registry_lists().items():
                text = text.replace(placeholder, ", ".join(names))
        return text


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line, like every other podnet error.

    Every parser records itself in the namespace it fills (the innermost one wins), so that an
    unknown option is reported against the subcommand it was given to (see `unknown_option`);
    it keeps its arguments and its subcommands in public attributes, as argparse does not.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arguments: list[argparse.Action] = []
        self.subcommands: dict[str, argparse.ArgumentParser] = {}
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.set_defaults(_parser=self)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.subcommands = action.choices  # filled in as subcommands are added (aliases too)
        return action

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"podnet: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


def unknown_option(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """One line for arguments the subcommand does not take: the closest option it does take,
    and where its help is. Only runs on a mistake, so difflib is imported here."""
    import difflib

    command = parser.prog.removeprefix("podnet").strip()
    where = f" for '{command}'" if command else ""
    see = f"(see {parser.prog} --help)"
    flags = [e for e in extras if e.startswith("-") and e != "-"]
    if not flags:
        return f"podnet: unexpected argument{'s' if len(extras) > 1 else ''} {' '.join(extras)}{where} {see}"
    given = flags[0].split("=", 1)[0]
    known = [opt for action in getattr(parser, "arguments", []) for opt in action.option_strings]
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"podnet: unknown option {given}{where}{hint} {see}"


def _add_network(sub: Any) -> None:
    net = sub.add_parser("network", help="manage networks").add_subparsers(dest="netcmd", metavar="COMMAND", parser_class=_Parser)
    c = net.add_parser("create", help="create a network")
    c.add_argument("name", help="the network's name (letters, digits, . _ -)")
    c.add_argument("-d", "--driver", default="bridge", metavar="DRIVER",
                   help="one of: " + DRIVERS_PLACEHOLDER + " (default %(default)s)")
    c.add_argument("--subnet", action="append", default=[], metavar="CIDR",
                   help="a subnet, for example 10.10.0.0/24 or fd00:10::/64 (repeatable; default: a free one)")
    c.add_argument("--gateway", action="append", default=[], metavar="IP",
                   help="the gateway of the --subnet it falls in (default: its first address)")
    c.add_argument("--ip-range", action="append", default=[], metavar="CIDR",
                   help="hand out addresses only from this part of a --subnet")
    c.add_argument("--aux-address", action="append", default=[], metavar="HOST=IP",
                   help="an address the network must never hand out (repeatable)")
    c.add_argument("--ipv6", action="store_true", help="add an IPv6 subnet too (picked if no --subnet gives one)")
    c.add_argument("--internal", action="store_true", help="no way out: no masquerade, no route to the outside")
    c.add_argument("--mtu", type=int, help="the MTU of the network's interfaces")
    c.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label on the network (repeatable)")
    c.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a driver option, for example parent=eth0 or macvlan_mode=bridge (repeatable)")
    ls = net.add_parser("ls", help="list networks")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("-q", "--quiet", action="store_true", help="print names only")
    ls.set_defaults(handler=_network_ls_handler, uses_api=False)
    i = net.add_parser("inspect", help="show a network as JSON")
    i.add_argument("names", nargs="+", metavar="NAME", help="networks to show")
    r = net.add_parser("rm", help="remove networks")
    r.add_argument("names", nargs="+", metavar="NAME", help="networks to remove (no sandbox may use them)")
    net.add_parser("prune", help="remove every network no sandbox uses")


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="run a command in a new sandbox")
    run.add_argument("-d", "--detach", action="store_true", help="run in the background and print the sandbox's id")
    run.add_argument("--name", help="the sandbox's name (default: a generated one)")
    run.add_argument("--network", "--net", action="append", default=[], metavar="NETWORK",
                     help="attach to this network, or host or none (repeatable; default: podnet)")
    run.add_argument("--ip", help="the IPv4 address on the first network (default: the next free one)")
    run.add_argument("--ip6", help="the IPv6 address on the first network (default: the next free one)")
    run.add_argument("--alias", "--network-alias", action="append", default=[], metavar="NAME",
                     help="another name the sandbox answers to in DNS (repeatable)")
    run.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]",
                     help="publish a port on the host, for example 8080:80, 127.0.0.1:5353:53/udp or "
                          "9000-9001:80-81 (repeatable)")
    run.add_argument("--hostname", help="the hostname inside the sandbox (default: its name)")
    run.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE",
                     help="a label on the sandbox, as Service selectors match them (repeatable)")
    run.add_argument("--namespace", "-n", default="default",
                     help="its Kubernetes-style namespace (made with `podnet namespace create`): Service names resolve in "
                          "NAMESPACE.svc.cluster.local first, NetworkPolicies of it select it (default %(default)s)")
    run.add_argument("--expose", action="append", default=[], metavar="[NAME=]PORT[/PROTO]",
                     help="a port it serves, named as a Kubernetes containerPort: Services' and NetworkPolicies' named "
                          "ports resolve through it, e.g. http=8080 or dns=53/udp (repeatable)")
    run.add_argument("--pids-limit", type=int, metavar="N", help="at most N processes inside the sandbox")
    run.add_argument("--memory", "-m", metavar="SIZE", help="memory limit, for example 512m or 1g")
    run.add_argument("--bandwidth-ingress", metavar="RATE",
                     help="limit what the sandbox receives, a tc rate such as 10mbit (TBF on its veth's host side)")
    run.add_argument("--bandwidth-egress", metavar="RATE",
                     help="limit what the sandbox sends, a tc rate such as 10mbit (TBF on an IFB device)")
    run.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                     help="an environment variable for the command (repeatable)")
    run.add_argument("--dns", action="append", default=[], metavar="IP",
                     help="a nameserver for the sandbox instead of the network's (repeatable)")
    run.add_argument("--rm", action="store_true", help="remove the sandbox when its command ends")
    run.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                     help="keep a capability beyond Docker's default set, e.g. NET_ADMIN, or ALL (repeatable)")
    run.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                     help="drop a capability of the default set, e.g. NET_RAW, or ALL (repeatable)")
    run.add_argument("--privileged", action="store_true", help="keep every capability")
    run.add_argument("--rootfs", metavar="DIR",
                     help="its own root filesystem: overlayfs over DIR (never written), the writes in its own layer")
    run.add_argument("--image", metavar="NAME", help="its own root filesystem from an image (see `podnet image import`)")
    run.add_argument("--read-only", action="store_true",
                     help="with --rootfs/--image: no writable layer; /tmp is a tmpfs")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="HOST_PATH:CONTAINER_PATH[:ro]",
                     help="with --rootfs/--image: bind-mount a host path into the sandbox, read-only with :ro (repeatable)")
    run.add_argument("-u", "--user", metavar="UID[:GID]",
                     help="run the command (and `podnet exec`) as this user, a number or a name from its /etc/passwd")
    run.add_argument("-w", "--workdir", metavar="DIR", help="the command's working directory inside the sandbox (default /)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    run.set_defaults(handler=_sandbox_handler("cmd_run"), uses_api=False)


def _add_exec(sub: Any) -> None:
    e = sub.add_parser("exec", help="run a command inside a running sandbox")
    e.add_argument("-u", "--user", metavar="UID[:GID]",
                   help="run as this user (a number, or a name from the sandbox's /etc/passwd) instead of the sandbox's")
    e.add_argument("-w", "--workdir", metavar="DIR", help="run in this directory instead of the sandbox's working directory")
    e.add_argument("name", help="the sandbox's name or id")
    e.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")


def _add_ps(sub: Any) -> None:
    ps = sub.add_parser("ps", help="list sandboxes")
    ps.add_argument("-a", "--all", action="store_true", help="show ended sandboxes too")
    ps.add_argument("-q", "--quiet", action="store_true", help="print ids only")
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ps.set_defaults(handler=_ps_handler, uses_api=False)


def _add_inspect(sub: Any) -> None:
    ins = sub.add_parser("inspect", help="show sandboxes as JSON")
    ins.add_argument("names", nargs="+", metavar="NAME", help="sandboxes to show (name or id)")


def _add_logs(sub: Any) -> None:
    lg = sub.add_parser("logs", help="print a sandbox's output")
    lg.add_argument("name", help="the sandbox's name or id")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new output until interrupted")


def _add_stop(sub: Any) -> None:
    st = sub.add_parser("stop", help="stop sandboxes")
    st.add_argument("names", nargs="+", metavar="NAME", help="sandboxes to stop (name or id)")
    st.add_argument("-t", "--time", type=float, default=10, metavar="SECONDS",
                    help="wait this long after SIGTERM before SIGKILL (default %(default)s)")
    st.set_defaults(handler=_sandbox_handler("cmd_stop"), uses_api=False)


def _add_rm(sub: Any) -> None:
    rm = sub.add_parser("rm", help="remove sandboxes")
    rm.add_argument("names", nargs="+", metavar="NAME", help="sandboxes to remove (name or id)")
    rm.add_argument("-f", "--force", action="store_true", help="stop running sandboxes first")
    rm.set_defaults(handler=_sandbox_handler("cmd_rm"), uses_api=False)


def _add_connect(sub: Any) -> None:
    cn = sub.add_parser("connect", help="connect a running sandbox to a network")
    cn.add_argument("network", help="the network to join")
    cn.add_argument("name", help="the sandbox's name or id")
    cn.add_argument("--ip", help="its IPv4 address on that network (default: the next free one)")
    cn.add_argument("--ip6", help="its IPv6 address on that network (default: the next free one)")
    cn.add_argument("--alias", action="append", default=[], metavar="NAME",
                    help="another name it answers to on that network (repeatable)")


def _add_disconnect(sub: Any) -> None:
    dc = sub.add_parser("disconnect", help="disconnect a sandbox from a network")
    dc.add_argument("network", help="the network to leave")
    dc.add_argument("name", help="the sandbox's name or id")


def _add_label(sub: Any) -> None:
    lb = sub.add_parser("label", help="set (key=value) or remove (key-) labels of a sandbox or CNI pod")
    lb.add_argument("name", help="the sandbox's name or id, or a CNI pod's name (K8S_POD_NAME) or container id")
    lb.add_argument("-n", "--namespace", help="the CNI pod's namespace (K8S_POD_NAMESPACE), when its name is not unique")
    lb.add_argument("changes", nargs="*", metavar="KEY=VALUE|KEY-", help="labels to set or (with a trailing -) remove")


def _add_reconcile(sub: Any) -> None:
    rc = sub.add_parser("reconcile", help="make the host match the store; remove leftovers")
    rc.add_argument("--json", action="store_true", help="print what was done as JSON")


def _add_demo(sub: Any) -> None:
    dm = sub.add_parser("demo", help="bring up a small multi-tier application and check every path")
    dm.add_argument("--down", action="store_true", help="remove the demo")


def _add_version(sub: Any) -> None:
    sub.add_parser("version", help="print podnet's version").set_defaults(handler=_cmd_version, uses_api=False)


_SANDBOX_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _sandbox_handler(name: str) -> Callable[[argparse.Namespace], int]:
    """A handler of cli/cmd_sandbox.py, imported when the command runs (not when parsed);
    one per name, so that every parser built holds the same one."""
    def handler(args: argparse.Namespace) -> int:
        from podnet.cli import cmd_sandbox  # lazy: it imports this module's flag helpers

        return getattr(cmd_sandbox, name)(args)

    return _SANDBOX_HANDLERS.setdefault(name, handler)


def _ps_handler(args: argparse.Namespace) -> int:
    """cli/cmd_ps.py's, imported when `ps` runs: it asks the agent before it imports the api."""
    from podnet.cli.cmd_ps import cmd_ps  # lazy: see the docstring

    return cmd_ps(args)


def _network_ls_handler(args: argparse.Namespace) -> int:
    """`network ls`, as `ps`: cli/cmd_ps.py asks the agent before it imports the api."""
    from podnet.cli.cmd_ps import cmd_network_ls  # lazy: see the docstring

    return cmd_network_ls(args)


# Podnet's own commands, each adding its parser when (and only when) it is the one given:
# building every parser costs more than the rest of a read command's start-up.
CORE_COMMANDS: dict[str, Callable[[Any], None]] = {
    "network": _add_network,
    "run": _add_run,
    "exec": _add_exec,
    "ps": _add_ps,
    "inspect": _add_inspect,
    "logs": _add_logs,
    "stop": _add_stop,
    "rm": _add_rm,
    "connect": _add_connect,
    "disconnect": _add_disconnect,
    "label": _add_label,
    "reconcile": _add_reconcile,
    "demo": _add_demo,
    "version": _add_version,
}

# Options before the command that take a value (so that their value is not read as the command).
_GLOBAL_VALUED = ("--root", "--store", "--cacert", "--cert", "--key", "--user", "--password")


def command_word(argv: list[str]) -> str | None:
    """The command argv names, or None when it cannot be told without the full parser (help,
    an unknown or abbreviated option, no command): then every parser is built."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _GLOBAL_VALUED:
            i += 2
        elif word.split("=", 1)[0] in _GLOBAL_VALUED and "=" in word:
            i += 1
        elif word.startswith("-"):
            return None
        else:
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command` one of podnet's own, only that command's parser is added,
    with an extension's command only its module's (the help listing needs them all)."""
    p = _Parser(prog="podnet", description="Container networking for Linux.")
    p.add_argument("--root", help="state directory (default /var/lib/podnet, or $PODNET_ROOT)")
    p.add_argument("--store", dest="store_store", metavar="URL",
                   help="keep the state in etcd v3: etcd://HOST:2379[,HOST:2379...][/PREFIX], https://... for TLS "
                        "(or $PODNET_STORE; default: the SQLite file under --root)")
    p.add_argument("--cacert", dest="store_cacert", metavar="FILE", help="CA bundle that signed etcd's certificate ($PODNET_STORE_CACERT)")
    p.add_argument("--cert", dest="store_cert", metavar="FILE", help="client certificate for etcd ($PODNET_STORE_CERT)")
    p.add_argument("--key", dest="store_key", metavar="FILE", help="its private key ($PODNET_STORE_KEY)")
    p.add_argument("--user", dest="store_user", metavar="NAME[:PASSWORD]", help="etcd user ($PODNET_STORE_USER)")
    p.add_argument("--password", dest="store_password", metavar="PASSWORD", help="etcd user's password ($PODNET_STORE_PASSWORD)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    if command in CORE_COMMANDS:
        CORE_COMMANDS[command](sub)
        return p
    if command in EXTENSION_COMMANDS:
        importlib.import_module(EXTENSION_COMMANDS[command]).register(sub)
        return p
    for add in CORE_COMMANDS.values():
        add(sub)
    for module_name in EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return p
