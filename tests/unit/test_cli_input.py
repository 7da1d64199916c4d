"""User mistakes end in one clear line, a non-zero exit, and no change of state (no root needed)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.api import networks, ports
from podnet.cli.parser import build_parser
from podnet.drivers import CNI_MODES, DRIVER_NAMES
from podnet.errors import InvalidArgument


def podnet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a private store; as root, also in a private network namespace, so that a
    mistake podnet failed to catch early can never touch this machine's networking."""
    jail = ["unshare", "--net", "--"] if os.geteuid() == 0 else []
    env = {**os.environ, "PODNET_RUN": str(tmp_path / "run"), "PODNET_NETNS_DIR": str(tmp_path / "netns")}
    return subprocess.run([*jail, sys.executable, "-m", "podnet", "--root", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("args,needle", [
    (["network", "create", "x", "--subnet", "10.0.0.1/24"], "host bits set"),
    (["network", "create", "x", "--subnet", "nonsense"], "not a CIDR"),
    (["network", "create", "x", "--subnet", "10.1.0.0/24", "--gateway", "10.2.0.1"], "not inside any --subnet"),
    (["network", "create", "bad name!"], "invalid network name"),
    (["network", "create", "x", "--driver", "vxlanx"], "unknown network driver"),
    (["network", "create", "x", "--mtu", "5"], "--mtu"),
    (["network", "create", "x", "--bogus"], "unknown option --bogus"),
    (["network", "inspect", "nope"], "not found"),
    (["run", "-p", "99999:80", "--", "true"], "invalid port"),
    (["run", "--memory", "lots", "--", "true"], "invalid size"),
    (["inspect", "nope"], "no such sandbox"),
    (["run", "--ip", "999.1.1.1", "--", "true"], "not an IPv4 address"),
    (["run", "--ip6", "10.0.0.1", "--", "true"], "not an IPv6 address"),
    (["network"], "give a network command"),
    (["run", "--memory", "1", "--", "true"], "the minimum is 6 MiB"),
    (["run", "--dns", "notanip", "--", "true"], "invalid --dns"),
    (["run", "--alias", "bad alias!", "--", "true"], "invalid --alias"),
    (["run", "--label", "bad key!=v", "--", "true"], "invalid label"),
    (["service", "create", "x", "--selector", "bad", "--port", "80"], "invalid --selector 'bad'"),
    (["service", "create", "x", "--selector", "app=x"], "at least one port"),
])
def test_one_line_and_nonzero(tmp_path: Path, args: list[str], needle: str) -> None:
    result = podnet(tmp_path, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("podnet: ") and needle in lines[0]
    assert "Traceback" not in result.stderr
    # nothing was recorded: a fresh `network ls` shows no user network
    assert "x" not in podnet(tmp_path, "network", "ls", "-q").stdout.split()


@pytest.mark.parametrize("spec,expected", [
    ("8080:80", (None, 8080, None, 80, None, "tcp")),
    ("127.0.0.1:8080:80/udp", ("127.0.0.1", 8080, None, 80, None, "udp")),
    ("[::1]:8080:80", ("::1", 8080, None, 80, None, "tcp")),
    ("9000-9002:7000-7002", (None, 9000, 9002, 7000, 7002, "tcp")),
    ("0.0.0.0:81:80", (None, 81, None, 80, None, "tcp")),
])
def test_port_specs(spec: str, expected: tuple) -> None:
    m = ports.parse(spec)
    assert (m.host_ip, m.host_port, m.host_port_end, m.container_port, m.container_port_end, m.protocol) == expected


@pytest.mark.parametrize("spec", ["80:", "a:b", "1-3:1-2", "8080:80/sctp", "300.1.1.1:80:80", "70000:80"])
def test_bad_port_specs(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        ports.parse(spec)


def test_gateway_pairs_with_its_subnet() -> None:
    configs = networks.build_subnets(["10.1.0.0/24", "fd00:9::/64"], ["fd00:9::fe", "10.1.0.254"], ["10.1.0.128/25"], {})
    assert configs[0].gateway == "10.1.0.254" and configs[0].ip_range == "10.1.0.128/25"
    assert configs[1].gateway == "fd00:9::fe"


def test_overlapping_subnets_in_one_request() -> None:
    with pytest.raises(InvalidArgument, match="overlap"):
        networks.build_subnets(["10.1.0.0/16", "10.1.2.0/24"], [], [], {})


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subcommand's parser under it (aliases once)."""
    yield parser
    for sub in {id(p): p for p in getattr(parser, "subcommands", {}).values()}.values():
        yield from _parsers(sub)


def test_every_option_of_every_subcommand_has_one_line_of_help() -> None:
    missing = []
    parsers = list(_parsers(build_parser()))
    assert {"podnet network create", "podnet run", "podnet service create", "podnet cni config"} <= {p.prog for p in parsers}
    for parser in parsers:
        for action in parser.arguments:
            text = action.help or ""
            if not text.strip() or text == argparse.SUPPRESS or "\n" in text:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without a one-line help: {missing}"


def test_help_lists_the_registrys_drivers_and_modes_and_publish_shows_its_syntax(tmp_path: Path) -> None:
    create = podnet(tmp_path, "network", "create", "--help")
    assert create.returncode == 0
    listed = " ".join(create.stdout.split())  # argparse wraps lines
    assert "one of: " + ", ".join(DRIVER_NAMES) in listed, create.stdout
    cni = " ".join(podnet(tmp_path, "cni", "config", "--help").stdout.split())
    assert "one of " + ", ".join(CNI_MODES) in cni, cni
    run = " ".join(podnet(tmp_path, "run", "--help").stdout.split())
    assert "-p [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], --publish" in run and "for example 8080:80" in run, run


@pytest.mark.parametrize("args,line", [
    (["network", "create", "x", "--subnt", "10.9.0.0/24"],
     "podnet: unknown option --subnt for 'network create'; did you mean --subnet? (see podnet network create --help)"),
    (["run", "--nmae", "web", "--", "true"],
     "podnet: unknown option --nmae for 'run'; did you mean --name? (see podnet run --help)"),
    (["run", "--publsh=8080:80", "--", "true"],
     "podnet: unknown option --publsh for 'run'; did you mean --publish? (see podnet run --help)"),
    (["service", "create", "x", "--selectr", "app=x"],
     "podnet: unknown option --selectr for 'service create'; did you mean --selector? (see podnet service create --help)"),
    (["network", "create", "x", "--bogus"],
     "podnet: unknown option --bogus for 'network create' (see podnet network create --help)"),
])
def test_a_flag_typo_names_the_closest_flag_and_the_subcommands_help(tmp_path: Path, args: list[str], line: str) -> None:
    result = podnet(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]
    assert "x" not in podnet(tmp_path, "network", "ls", "-q").stdout.split(), "nothing was made"


@pytest.mark.parametrize("subnet,needle", [
    ("127.0.0.0/8", "loopback"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.0/24", "reserved"),
    ("240.0.0.0/4", "reserved"),
    ("169.254.0.0/16", "link-local"),
    ("0.0.0.0/8", "unspecified"),
    ("0.0.0.0/0", "overlaps"),
    ("10.96.0.0/16", "Service CIDR"),
    ("10.96.5.0/24", "Service CIDR"),
    ("10.1.0.0/31", "no room"),
    ("10.1.0.1/32", "no room"),
    ("::1/128", "loopback"),
    ("ff00::/8", "multicast"),
    ("fe80::/10", "link-local"),
    ("::/0", "unspecified"),
    ("fd00:96::/112", "Service CIDR"),
    ("fd00:1::/127", "no room"),
    ("fd00:1::1/128", "no room"),
])
def test_dangerous_subnets_refused(tmp_path: Path, subnet: str, needle: str) -> None:
    """Subnets that would break the host are refused in one line, before anything is made."""
    result = podnet(tmp_path, "network", "create", "x", "--subnet", subnet)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("podnet: invalid --subnet") and needle in lines[0], result.stderr
    assert "x" not in podnet(tmp_path, "network", "ls", "-q").stdout.split()


def test_service_cidrs_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PODNET_SERVICE_CIDRS moves what networks must avoid: the default range becomes free."""
    monkeypatch.setenv("PODNET_SERVICE_CIDRS", "10.200.0.0/16")
    assert networks.build_subnets(["10.96.0.0/24"], [], [], {})[0].subnet == "10.96.0.0/24"
    with pytest.raises(InvalidArgument, match="Service CIDR 10.200.0.0/16"):
        networks.build_subnets(["10.200.1.0/24"], [], [], {})


def test_smallest_subnets_still_allowed() -> None:
    """A /30 and a /126 hold a gateway and one sandbox: they stay allowed."""
    assert [c.subnet for c in networks.build_subnets(["10.1.0.0/30", "fd00:1::/126"], [], [], {})] == ["10.1.0.0/30", "fd00:1::/126"]
