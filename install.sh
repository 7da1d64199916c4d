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
# against ~70 ms for a pyenv shim), and what the tests and benchmarks use as real parts
# and anchors (the reference CNI plugins, ping, conntrack); podman, containerd and a static
# busybox are the real CNI clients the tests drive podnet's plugin with.
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  python3 python3-venv nftables iproute2 iptables util-linux procps iputils-ping conntrack \
  containernetworking-plugins ca-certificates dnsutils dnsmasq-base dnsperf aardvark-dns iperf3 curl >/dev/null
# What `podnet capture` and `podnet topology` run (tcpdump, Graphviz), and what their tests and
# the metrics' test use as real parts: Prometheus scraping the agent, headless Chromium rendering
# the topology page (no recommends: ~350 MB instead of ~600 MB). The tests run Prometheus inside
# their own hosts: a machine-wide one the package starts (where systemd runs) is stopped again
# when this script installed it, as etcd's below.
if ! dpkg -s prometheus >/dev/null 2>&1; then
  apt-get install -y -q --no-install-recommends tcpdump graphviz prometheus chromium >/dev/null
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
else
  apt-get install -y -q --no-install-recommends tcpdump graphviz chromium >/dev/null
fi
# The real CNI clients, with what Debian recommends beside them (the tests ran that way).
apt-get install -y -q podman containerd busybox-static >/dev/null
# etcd 3.4 and etcdctl: the cluster store, which the tests start inside their own hosts. Where
# systemd runs, Debian's package also starts a machine-wide etcd that podnet does not use: when
# this script is what installed the package, that service is stopped and disabled again.
if ! dpkg -s etcd-server >/dev/null 2>&1; then
  apt-get install -y -q --no-install-recommends etcd-server etcd-client >/dev/null
  if [ -d /run/systemd/system ]; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
else
  apt-get install -y -q --no-install-recommends etcd-client >/dev/null
fi

# podnet and its Python dependencies in a venv of Debian's interpreter.
venv=/opt/podnet/venv
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"
ln -sf "$venv/bin/podnet" /usr/local/bin/podnet
echo "podnet installed: $(podnet version)"

# The CNI plugin: a small stdlib-only entry named `podnet` in the CNI plugin directories
# (the CNI default /opt/cni/bin and Debian's /usr/lib/cni) that hands each call to the agent,
# or runs the plugin from this venv when no agent runs. `podnet cni config NET` prints a
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
