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
[ $# -gt 0 ] || set -- tests
# Test the tree this script is in (a git worktree too), not whatever the venv was installed from.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Inside the private namespace only loopback exists (some unit tests talk over it); bring it up.
exec unshare --net --mount --propagation private -- sh -c 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$@"' "$python" "$@"
