#!/usr/bin/python3 -S
"""stub-ipam: a CNI IPAM plugin speaking 1.1.0, for the tests of delegated IPAM
(tests/integration/test_cni_spec.py; Debian's IPAM plugins stop at 1.0.0).

It logs every call to /run/stub-ipam/calls (the Host's private /run), writes "stub-ipam:
COMMAND ID" to stderr, hands out PREFIX.10, .11, ... of ipam.subnet, and fails on request:
DEL while /run/stub-ipam/fail-del-ID exists (code 11), STATUS while /run/stub-ipam/not-ready
exists (code 50). GC releases what is not in cni.dev/valid-attachments.
"""
import json, os, sys
state, cmd, cid = "/run/stub-ipam", os.environ.get("CNI_COMMAND"), os.environ.get("CNI_CONTAINERID", "")
conf = json.loads(sys.stdin.read() or "{}")
os.makedirs(state + "/alloc", exist_ok=True)
with open(state + "/calls", "a") as log:
    log.write(json.dumps({"command": cmd, "cid": cid, "conf": conf}) + "\n")
sys.stderr.write("stub-ipam: %s %s\n" % (cmd, cid))
def fail(code, msg):
    print(json.dumps({"cniVersion": conf.get("cniVersion", "1.1.0"), "code": code, "msg": msg}))
    sys.exit(1)
if cmd == "VERSION":
    print(json.dumps({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}))
elif cmd == "ADD":
    n = len(os.listdir(state + "/alloc")) + 10
    prefix = conf["ipam"]["subnet"].rsplit(".", 1)[0]
    open(state + "/alloc/" + cid, "w").write("%s.%d" % (prefix, n))
    print(json.dumps({"cniVersion": conf["cniVersion"], "ips": [{"address": "%s.%d/24" % (prefix, n), "gateway": prefix + ".1"}],
                      "routes": conf["ipam"].get("routes", [])}))
elif cmd == "DEL":
    if os.path.exists(state + "/fail-del-" + cid):
        fail(11, "stub-ipam cannot release %s now" % cid)
    if os.path.exists(state + "/alloc/" + cid):
        os.unlink(state + "/alloc/" + cid)
elif cmd == "STATUS":
    if os.path.exists(state + "/not-ready"):
        fail(50, "stub-ipam has no addresses left")
elif cmd == "GC":
    valid = {a["containerID"] for a in conf.get("cni.dev/valid-attachments", [])}
    for held in os.listdir(state + "/alloc"):
        if held not in valid:
            os.unlink(state + "/alloc/" + held)
