#!/usr/bin/env bash
# Run podnet's tests (as root, after ./install.sh). Extra arguments go to pytest.
#
# The whole run happens in a private network and mount namespace, and every test that
# touches the kernel makes its own simulated host inside that (tests/sandbox.py), so
# nothing reaches this machine's interfaces, nftables or named namespaces.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
python=/opt/podnet/venv/bin/python
[ -x "$python" ] || python=.venv/bin/python
if [ ! -x "$python" ]; then
  echo "test.sh: podnet is not installed; run ./install.sh --no-demo first" >&2
  exit 1
fi

# What only the tests need, installed here when missing (./install.sh leaves it out): the
# Debian packages of tests/apt-packages.txt and the Python packages of pyproject's `test` extra.
missing=() missing_rec=() stop_units=()
while read -r pkg flags; do
  [ -n "$pkg" ] || continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q " ok installed" && continue
  case " $flags " in *" +recommends "*) missing_rec+=("$pkg") ;; *) missing+=("$pkg") ;; esac
  for flag in $flags; do
    case "$flag" in +stop:*) stop_units+=("${flag#+stop:}") ;; esac
  done
done < <(sed 's/#.*//' tests/apt-packages.txt)
if [ ${#missing[@]} -gt 0 ] || [ ${#missing_rec[@]} -gt 0 ]; then
  wanted=("${missing[@]}" "${missing_rec[@]}")
  echo "test.sh: installing what the tests use: ${wanted[*]}" >&2
  apt_log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  apt="apt-get -o DPkg::Lock::Timeout=600 -y -q"
  if ! { $apt update && { [ ${#missing[@]} -eq 0 ] || $apt install --no-install-recommends "${missing[@]}"; } &&
         { [ ${#missing_rec[@]} -eq 0 ] || $apt install "${missing_rec[@]}"; }; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    rm -f "$apt_log"
    echo "test.sh: could not install the test packages above (run it as root, with network access)" >&2
    exit 1
  fi
  rm -f "$apt_log"
  if [ -d /run/systemd/system ]; then
    for unit in "${stop_units[@]}"; do systemctl disable --now "$unit" >/dev/null 2>&1 || true; done
  fi
fi
if ! "$python" -c 'import pytest, pyflakes' 2>/dev/null; then  # the test extra's modules
  mapfile -t extra < <("$python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))')
  "$python" -m pip install -q --disable-pip-version-check "${extra[@]}"
fi

[ $# -gt 0 ] || set -- tests
# Test the tree this script is in (a git worktree too), not whatever the venv was installed from.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Inside the private namespace only loopback exists (some unit tests talk over it); bring it up.
# pytest runs below tests/programs/reaper.py, a child subreaper: what a test started and
# left running stays below it, and the end of the run (tests/leaks.py) finds and fails it.
exec unshare --net --mount --propagation private -- sh -c 'ip link set lo up && exec /usr/bin/python3 -S tests/programs/reaper.py "$0" -m pytest -q -p no:cacheprovider --durations=15 "$@"' "$python" "$@"
