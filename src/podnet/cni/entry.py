#!/usr/bin/python3 -IS
"""/opt/cni/bin/podnet: hand one CNI call to the podnet agent, or run it here when none runs.

A runtime starts a plugin as a new process for every call, so start-up is part of every
ADD. Debian's /usr/bin/python3 with -S starts in ~10 ms; importing podnet's api (pydantic,
pyroute2) costs ~350 ms. This script imports only the stdlib's os, sys, socket, time and json,
sends the CNI_* environment and stdin to the agent of the store in force (HTTP/1.1 + JSON
on its unix socket, `POST /v1/cni`; a cluster store's agent is found by _store_run_dir()) and prints the agent's answer with its exit code. When no agent listens it
execs the full plugin (`python -m podnet.cni` of podnet's venv) with stdin replayed from a
memfd: the same answer, ~0.4 s slower. `podnet cni install` writes this file with
PODNET_PYTHON filled in.
"""

import json
import os
import socket
import stat
import sys
import time

PODNET_PYTHON = "/opt/podnet/venv/bin/python"  # `podnet cni install` writes the venv's interpreter here
TIMEOUT = 300.0  # an ADD waits for the agent's lock; a runtime's own timeout is the real bound
MAX_AGENT_BODY = 1024 * 1024  # the agent refuses larger requests (agent/server.py MAX_BODY): run those here
STORES_DIR = "/run/podnet-stores"  # config._known_ids_file
SCOPE_LEN = 8  # config.SCOPE_LEN


def _error(code: int, msg: str, details: str = "") -> int:
    sys.stdout.write(json.dumps({"cniVersion": "1.1.0", "code": code, "msg": msg, "details": details}) + "\n")
    return 1


def _ask_agent(path: str, body: bytes) -> bytes:
    """The raw HTTP answer; OSError (ENOENT, ECONNREFUSED) before anything was sent means no agent."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            sock.connect(path)
            break
        except BlockingIOError:  # the agent's listen backlog is full (many parallel calls): wait a turn
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.002)
        except OSError:
            sock.close()
            raise
    with sock:
        head = ("POST /v1/cni HTTP/1.1\r\nHost: podnet-agent\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head + body)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _fallback(stdin: bytes) -> int:
    """Run the whole plugin in this process's place, stdin replayed from memory."""
    if not os.access(PODNET_PYTHON, os.X_OK):
        return _error(50, "podnet is not installed: " + PODNET_PYTHON + " is missing",
                      "run podnet's install.sh, or `podnet cni install` again")
    fd = os.memfd_create("cni-config")
    os.write(fd, stdin)
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)
    sys.stdout.flush()
    os.execv(PODNET_PYTHON, [PODNET_PYTHON, "-m", "podnet.cni"])
    return 1  # not reached


def _store_run_dir(url: str) -> str | None:
    """The run directory of the agent serving the cluster store at url, as podnet.config names
    it: the store's identity is in /run/podnet-stores/<first 32 hex digits of SHA-256(url as
    written)> (config._known_ids_file, written by every podnet process that opened the store),
    the agent's directory /run/podnet-<first 8 of it>. forwarder.c computes the same. None: this
    host has no trustworthy record of that store, and the plugin runs here."""
    import hashlib  # only for a cluster store: the default store's calls skip it

    name = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    try:
        fd = os.open(os.path.join(STORES_DIR, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        # root's file, written by podnet only (the directory is root's, 0700): anything else is ignored
        if not (stat.S_ISREG(found.st_mode) and found.st_uid == 0 and not found.st_mode & 0o022):
            return None
        scope = os.read(fd, 128)[:SCOPE_LEN].decode("ascii", "replace")
    finally:
        os.close(fd)
    if len(scope) != SCOPE_LEN or not set(scope) <= set("0123456789abcdef"):
        return None  # the scope becomes part of a path: hex digits only
    return "/run/podnet-" + scope


def main() -> int:
    stdin = sys.stdin.buffer.read()
    run_dir = os.environ.get("PODNET_RUN") or "/run/podnet"
    root = os.environ.get("PODNET_ROOT")
    url = os.environ.get("PODNET_STORE")
    if not os.environ.get("PODNET_RUN") and url:
        found = _store_run_dir(url)
        if found is None:
            return _fallback(stdin)
        run_dir = found  # the cluster store's own agent; /run/podnet's serves the default store
    elif not os.environ.get("PODNET_RUN") and root and os.path.realpath(root) != "/var/lib/podnet":
        # another SQLite root: its agent's socket is named by its identity (podnet.config), read
        # from the store file by the plugin; /run/podnet's agent must not get the call
        return _fallback(stdin)
    # PODNET_DEBUG travels with the call: the hint tells users to set it in the runtime's environment.
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "PODNET_DEBUG"}
    try:
        text = stdin.decode("utf-8")
    except UnicodeDecodeError:
        return _fallback(stdin)  # the plugin itself answers with the spec's decode error
    body = json.dumps({"env": env, "stdin": text}).encode()
    if len(body) > MAX_AGENT_BODY:
        return _fallback(stdin)
    try:
        raw = _ask_agent(os.path.join(run_dir, "agent.sock"), body)
    except (FileNotFoundError, ConnectionRefusedError):
        return _fallback(stdin)
    except OSError as exc:
        return _error(11, "the podnet agent did not answer", str(exc))
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    try:
        answer = json.loads(payload)
    except ValueError:
        return _error(11, "the podnet agent gave an unreadable answer", head[:200].decode("latin-1"))
    if status != [b"200"]:
        return _error(100, "the podnet agent refused the call: " + str(answer.get("message", status)),
                      str(answer.get("hint", "")))
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    return int(answer.get("code", 1))


if __name__ == "__main__":
    sys.exit(main())
