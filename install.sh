#!/usr/bin/env bash
# Install podnet on a fresh Debian 12 machine, as root, then run its demo.
#   ./install.sh            install everything and run `podnet demo`
#   ./install.sh --no-demo  install only (CI uses this: the demo is tested inside a sandbox)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
demo=1
[ "${1:-}" = "--no-demo" ] && demo=0
if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run it as root (sudo ./install.sh)" >&2
  exit 1
fi

# System packages: the kernel tools podnet drives, Debian's Python (starts in ~10 ms,
# against ~70 ms for a pyenv shim), the reference CNI plugins podnet's conflists chain
# (portmap, tuning, bandwidth, firewall; host-local for delegated IPAM), curl and ping that
# the demo suggests, tcpdump and Graphviz that `podnet capture` and `podnet topology` run. What only the tests use (podman, containerd, dnsperf, ...) is in
# tests/apt-packages.txt: ./test.sh installs it when missing.
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  python3 python3-venv nftables iproute2 iptables util-linux procps iputils-ping conntrack \
  containernetworking-plugins ca-certificates curl >/dev/null
# The C compiler `podnet cni install` builds the compiled CNI entry with (~1 ms per call
# against ~40 ms for the stdlib Python entry, which it installs instead when none is there).
apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null
# What `podnet capture` and `podnet topology` run.
apt-get install -y -q --no-install-recommends tcpdump graphviz >/dev/null
# Encrypted overlay networks (-o encrypted=true): wg(8) configures WireGuard, and where the
# kernel has no WireGuard module the agent runs wireguard-go as its child.
apt-get install -y -q --no-install-recommends wireguard-tools wireguard-go >/dev/null
# HAProxy: the agent runs its own as the Ingress proxy (`podnet agent --ingress-ports`), with
# its own configuration under podnet's run directory. The machine-wide haproxy.service that
# Debian enables is not used: stopped and disabled when this script installed the package
# (a haproxy the machine already had is left as it was).
had_haproxy=$(dpkg-query -W -f='${Status}' haproxy 2>/dev/null | grep -c 'install ok installed' || true)
apt-get install -y -q --no-install-recommends haproxy >/dev/null
if [ "$had_haproxy" = 0 ] && [ -d /run/systemd/system ]; then
  systemctl disable --now haproxy.service >/dev/null 2>&1 || true
fi

# podnet and its Python dependencies in a venv of Debian's interpreter: a normal install (a
# wheel built from this clone and copied into the venv), so moving or deleting the clone
# leaves the installed `podnet` working. Run ./install.sh again after changing the code.
venv=/opt/podnet/venv
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$wheels" .
rm -rf build src/*.egg-info  # what building left in the clone
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheels"/podnet-*.whl
"$venv/bin/pip" install -q --disable-pip-version-check "$wheels"/podnet-*.whl  # its dependencies
# The console script pip writes imports `re` to tidy argv[0] for Windows (enum and the regex
# compiler: ~4 ms of every command's start-up, a tenth of `podnet version`); this one is the
# same entry point without it.
printf '#!%s\nimport sys\nfrom podnet.cli.main import main\nsys.exit(main())\n' "$venv/bin/python3" > "$venv/bin/podnet"
ln -sf "$venv/bin/podnet" /usr/local/bin/podnet
echo "podnet installed: $(podnet version)"

# The CNI plugin: a small entry named `podnet` in the CNI plugin directories (the CNI default
# /opt/cni/bin and Debian's /usr/lib/cni), compiled from the package's forwarder.c, that hands
# each call to the agent, or runs the plugin from this venv when no agent runs. `podnet cni config NET` prints a
# conflist for /etc/cni/net.d.
podnet cni install

if [ "$demo" = 1 ]; then
  # The agent serves DNS and follows sandboxes: run it as a service where systemd runs,
  # else in the background with its log in /var/log/podnet-agent.log.
  if [ -d /run/systemd/system ]; then
    install -m 0644 contrib/podnet-agent.service /etc/systemd/system/podnet-agent.service
    systemctl daemon-reload
    systemctl enable --now podnet-agent.service
  elif ! podnet agent status >/dev/null 2>&1; then
    setsid podnet agent >>/var/log/podnet-agent.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 50); do podnet agent status >/dev/null 2>&1 && break; sleep 0.1; done
  podnet agent status
  podnet demo
fi
