"""`podnet docker-plugin status`: is Docker's network and IPAM plugin `podnet` served?"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

PLUGINS_DIR = "/run/docker/plugins"  # docker/plugin.py's default, repeated: registering must not import it

HELP = """\
The agent serves Docker's libnetwork plugin `podnet` (network driver and IPAM driver) as
/run/docker/plugins/podnet.sock when dockerd is installed (`podnet agent --docker-plugins-dir
DIR` elsewhere). dockerd finds it by that name, with no restart and no spec file:

  docker network create -d podnet --ipam-driver podnet app
  docker run --network app --dns GATEWAY busybox ...
"""


def register(sub: Any) -> None:
    plugin = sub.add_parser("docker-plugin", help="Docker's network and IPAM plugin (served by the agent)",
                            description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = plugin.add_subparsers(dest="dockercmd", metavar="COMMAND", required=True)
    st = cmds.add_parser("status", help="does the plugin's socket answer as dockerd asks it (Plugin.Activate)")
    st.add_argument("--plugins-dir", default=PLUGINS_DIR, metavar="DIR", help=f"Docker's plugin directory ({PLUGINS_DIR})")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(handler=status)


def status(args: argparse.Namespace) -> int:
    from podnet.util.unixhttp import UnixConnection  # lazy: every command imports this module

    path = f"{args.plugins_dir.rstrip('/')}/podnet.sock"
    conn = UnixConnection(path, 5.0, host="plugin")
    implements: list[str] = []
    try:
        conn.request("POST", "/Plugin.Activate", body=b"{}", headers={"Content-Type": "application/json"})
        implements = json.loads(conn.getresponse().read()).get("Implements", [])
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"Served": bool(implements), "Socket": path, "Implements": implements}))
    elif implements:
        print(f"podnet's Docker plugin is served at {path} ({', '.join(implements)})")
    else:
        print(f"podnet: no Docker plugin answers at {path}; start `podnet agent` (it serves it when dockerd "
              "is installed, or with --docker-plugins-dir DIR)", file=sys.stderr)
    return 0 if implements else 1
