"""Where podnet keeps things on a host, and the names it gives what it makes.

Every path is derived from two roots so that a test (or a second podnet on one machine)
can point podnet elsewhere: the state root (persistent, the store and logs; `--root` or
PODNET_ROOT, default /var/lib/podnet) and the run root (volatile, gone at reboot like the
processes it describes; PODNET_RUN, default /run/podnet). Named network namespaces live
where iproute2 looks for them (PODNET_NETNS_DIR, default /run/netns) so that `ip netns`
shows podnet's sandboxes too.

Each store has an identity, a random id made with it (store/sqlite.py). Every kernel
object podnet makes carries it: links in their alias, netns, cgroups and nftables tables
in their names. Reconcile and GC touch only objects of their own store, so two stores on
one host (`--root`) coexist. The default store (/var/lib/podnet) keeps the names podnet
always had (podnet0, /run/podnet, `table inet podnet`, netns podnet-<id>); any other
store's names carry the first 8 hex digits of its id (its "scope").
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podnet.errors import InvalidArgument, StorageError

# Names podnet gives to what it owns in the kernel; garbage collection only ever
# touches objects carrying these prefixes (and the identity of its own store).
LINK_PREFIX = "pn"
NETNS_PREFIX = "podnet-"
NFT_TABLE = "podnet"
SERVICES_TABLE = "podnet-services"
POLICY_TABLE = "podnet-policy"
LINK_ALIAS_PREFIX = "podnet:"
DEFAULT_BRIDGE = "podnet0"
DEFAULT_ROOT = Path("/var/lib/podnet")
DEFAULT_RUN = Path("/run/podnet")
STORE_FILE = "podnet.db"
SCOPE_LEN = 8
_HEX12 = re.compile(r"[0-9a-f]{12}")


# Service virtual IPs come from these (Kubernetes' kind/kubeadm defaults); PODNET_SERVICE_CIDRS
# (comma separated) overrides them. Networks may not overlap them: a VIP must never be a sandbox.
DEFAULT_SERVICE_CIDRS = ("10.96.0.0/16", "fd00:96::/112")


def service_cidrs() -> tuple[str, ...]:
    """The service CIDRs in force: PODNET_SERVICE_CIDRS (comma separated) or the defaults."""
    text = os.environ.get("PODNET_SERVICE_CIDRS")
    cidrs = tuple(c.strip() for c in text.split(",") if c.strip()) if text else DEFAULT_SERVICE_CIDRS
    for c in cidrs:
        try:
            ipaddress.ip_network(c)
        except ValueError:
            raise InvalidArgument(f"PODNET_SERVICE_CIDRS: {c!r} is not a CIDR", "write it like 10.96.0.0/16") from None
    return cidrs


def veth_name(endpoint_id: str) -> str:
    """The host side of an endpoint's veth: 14 characters, within the kernel's 15."""
    return f"{LINK_PREFIX}ve{endpoint_id[:10]}"


@dataclass(frozen=True)
class Paths:
    root: Path
    run: Path
    netns_dir: Path
    cgroup_parent: str
    # The identity of the store under root: None before it exists (or for a store older
    # than identities, which keeps the default names until its first write-open).
    store_id: str | None = None
    # "" for the default store (today's names); else the first SCOPE_LEN hex digits of store_id.
    scope: str = ""

    @property
    def store_file(self) -> Path:
        return self.root / STORE_FILE

    def sandbox_state_dir(self, sandbox_id: str) -> Path:
        """Volatile per-sandbox files: pid, exit code, the generated /etc files."""
        return self.run / "sandboxes" / sandbox_id

    def sandbox_log(self, sandbox_id: str) -> Path:
        """The output of a sandbox's command; kept until `podnet rm`."""
        return self.log_dir / f"{sandbox_id}.log"

    @property
    def images_dir(self) -> Path:
        """Imported root filesystems: images/<image id>/rootfs (see runtime/images)."""
        return self.root / "images"

    def image_rootfs(self, image_id: str) -> Path:
        return self.images_dir / image_id / "rootfs"

    @property
    def layers_dir(self) -> Path:
        """Sandboxes' own layers over their root filesystem: layers/<sandbox id>/{init,upper,work}."""
        return self.root / "layers"

    def sandbox_layers(self, sandbox_id: str) -> Path:
        return self.layers_dir / sandbox_id

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lock_dir(self) -> Path:
        return self.run / "locks"

    # --- names of this store's kernel objects -------------------------------------------
    def _scoped(self, name: str, sep: str = "-") -> str:
        return f"{name}{sep}{self.scope}" if self.scope else name

    @property
    def nft_table(self) -> str:
        """This store's firewall table (`inet`); each store syncs its own, none clobbers another's."""
        return self._scoped(NFT_TABLE)

    @property
    def services_table(self) -> str:
        return self._scoped(SERVICES_TABLE)

    @property
    def policy_table(self) -> str:
        """NetworkPolicies' table (`inet`), present only while a policy is applied."""
        return self._scoped(POLICY_TABLE)

    @property
    def default_bridge(self) -> str:
        return f"{LINK_PREFIX}{self.scope}0" if self.scope else DEFAULT_BRIDGE

    def netns_name(self, sandbox_id: str) -> str:
        return f"{NETNS_PREFIX}{self.scope}-{sandbox_id[:12]}" if self.scope else f"{NETNS_PREFIX}{sandbox_id[:12]}"

    def owns_netns(self, name: str) -> bool:
        """A netns name this store makes (another store's never matches)."""
        head = f"{NETNS_PREFIX}{self.scope}-" if self.scope else NETNS_PREFIX
        return name.startswith(head) and _HEX12.fullmatch(name[len(head):]) is not None

    def link_alias(self, kind: str, object_id: str, node: str | None = None) -> str:
        """The IFLA_IFALIAS mark of a link this store makes: podnet:<store id>:<kind>:<object id>,
        the store id followed by @<node> on a cluster store (node: the host that made it)."""
        if self.store_id is None:
            return f"{LINK_ALIAS_PREFIX}{kind}:{object_id}"
        owner = f"{self.store_id}@{node}" if node else self.store_id
        return f"{LINK_ALIAS_PREFIX}{owner}:{kind}:{object_id}"

    def owns_link(self, alias: str, node: str | None = None) -> tuple[str, str] | None:
        """(kind, object id) when the alias marks a link of this store, else None; with node,
        a link another node of the store made is not listed either (simulated hosts that share
        a network namespace never collect each other's links).

        Marks without a store id were made before stores had identities: they belong to
        the default store, which was the only one with names of its own. Marks without a node
        were made before marks named it: any node of the store may collect them.
        """
        if not alias.startswith(LINK_ALIAS_PREFIX):
            return None
        parts = alias[len(LINK_ALIAS_PREFIX):].split(":")
        if len(parts) == 3:
            owner, kind, object_id = parts
            store, _, made_by = owner.partition("@")
            if node and made_by and made_by != node:
                return None
            return (kind, object_id) if store == self.store_id and store else None
        if len(parts) == 2:
            return (parts[0], parts[1]) if not self.scope else None
        return None


_IDENTITIES: dict[Path | str, str] = {}
# How the identity of a store at a URL (etcd) is read: set by podnet.store, which this floor
# cannot import. Returns None where the store has none yet; raises a PodnetError when unreachable.
_URL_IDENTITY_READER: Callable[[str], str | None] | None = None


def store_url() -> str | None:
    """The cluster store in force (`--store`, which the CLI puts into PODNET_STORE), or None for
    the SQLite file under the state root."""
    return os.environ.get("PODNET_STORE") or None


def set_url_identity_reader(reader: Callable[[str], str | None]) -> None:
    global _URL_IDENTITY_READER
    _URL_IDENTITY_READER = reader


def store_locator(root: Path) -> Path | str:
    """What names the store in force: its URL, or the SQLite file under root."""
    return store_url() or root / STORE_FILE


def remember_store_id(store: Path | str, store_id: str) -> None:
    """Called by whoever opened the store, so the rest of the process never opens it again for this.

    A cluster store's identity also goes to the processes this one starts (a sandbox's
    supervisor runs where etcd may be out of reach): PODNET_STORE_ID, `<id>@<url>`.
    """
    _IDENTITIES[store] = store_id
    if isinstance(store, str):
        os.environ["PODNET_STORE_ID"] = f"{store_id}@{store}"
        _write_known_id(store, store_id)


def _known_ids_file(url: str) -> Path:
    """Where this host remembers a cluster store's identity: what names its objects here while
    etcd is away (`podnet agent status`, the agent's clean-up), and how the CNI entries, which
    cannot open etcd in the ~1 ms they have, find that store's agent (cni/entry.py
    _store_run_dir, cni/forwarder.c store_run_dir: they hash the URL the same way, so change
    all three together). The URL exactly as written: two spellings of one store get two files,
    each naming the same identity, and a spelling never recorded only costs the fast path."""
    import hashlib  # lazy: only a cluster store's first open on a host, or etcd away, needs it

    return DEFAULT_RUN.with_name("podnet-stores") / hashlib.sha256(url.encode()).hexdigest()[:32]


def _write_known_id(url: str, store_id: str) -> None:
    path = _known_ids_file(url)
    try:
        if path.is_file() and path.read_text() == store_id:
            return
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        # 0600 whatever the umask: the CNI entries trust only root's file that no one else can write
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(store_id)
        tmp.replace(path)
    except OSError:
        pass  # not root, or a read-only /run: only the fallback is lost


def _url_store_id(url: str) -> str | None:
    inherited, _, inherited_url = os.environ.get("PODNET_STORE_ID", "").partition("@")
    if inherited and inherited_url == url:
        return inherited
    if url not in _IDENTITIES and _URL_IDENTITY_READER is None:
        # A process that has not loaded the store (`run -d`, `stop`, `rm` on their way to the
        # agent): the identity this host recorded names the agent's socket without a round trip
        # to etcd. Not kept: a command that then opens the store reads the identity itself (and
        # without a record the run directory is podnet-nostore, where no agent answers).
        try:
            return _known_ids_file(url).read_text().strip() or None
        except OSError:
            return None
    if url not in _IDENTITIES and _URL_IDENTITY_READER is not None:
        try:
            found = _URL_IDENTITY_READER(url)
        except StorageError as away:
            # etcd away: the identity this host last saw names its objects; none seen, say why.
            try:
                found = _known_ids_file(url).read_text().strip() or None
            except OSError:
                raise away from None
        if found:
            _IDENTITIES[url] = found
    return _IDENTITIES.get(url)


def read_store_id(store_file: Path) -> str | None:
    """The identity recorded in a store file, without creating or changing it (None: no store yet)."""
    if store_file in _IDENTITIES:
        return _IDENTITIES[store_file]
    if not store_file.is_file():
        return None
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{store_file}?mode=ro", uri=True, timeout=60)
        try:
            row = db.execute("SELECT value FROM store WHERE name = 'id'").fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # a store older than identities, or not a store (its opener refuses it)
        # Unreadable now (a full disk fails even a read: SQLite cannot grow its shared memory; a
        # permission; a broken file): the store's opener meets the same error and words it by
        # its result code (store/failures.py), which this floor cannot import.
        return None
    except sqlite3.DatabaseError:
        return None  # not a store: opening it says so in one line
    if row:
        _IDENTITIES[store_file] = row[0]
        return row[0]
    return None


def is_default_root(root: Path) -> bool:
    return _is_default_root(str(root))


@functools.lru_cache(maxsize=64)
def _is_default_root(root: str) -> bool:
    """Memoised: paths() asks on every call (~9 times per CNI ADD) and two realpath()s cost
    ~0.2 ms of stat calls each time; a state directory does not turn into a symlink under a
    running podnet."""
    return os.path.realpath(root) == os.path.realpath(DEFAULT_ROOT)


def paths(root: str | os.PathLike[str] | None = None, store_id: str | None = None) -> Paths:
    """The paths in force: an explicit root wins over the environment, which wins over defaults.

    The CLI puts `--root` into PODNET_ROOT, so every part of one podnet process (and the
    sandbox supervisors it starts) works on the same store.
    """
    env = os.environ
    state = Path(root or env.get("PODNET_ROOT") or DEFAULT_ROOT)
    url = store_url()
    if url is not None:  # a cluster store: never the default store's names
        store_id = store_id or _url_store_id(url)
        scope = store_id[:SCOPE_LEN] if store_id else ""
        parent = env.get("PODNET_CGROUP_PARENT") or "podnet"
        return Paths(
            root=state,
            run=Path(env["PODNET_RUN"]) if env.get("PODNET_RUN") else DEFAULT_RUN.with_name(f"podnet-{scope or 'nostore'}"),
            netns_dir=Path(env.get("PODNET_NETNS_DIR") or "/run/netns"),
            cgroup_parent=f"{parent.rstrip('/')}/{scope}" if scope else parent,
            store_id=store_id,
            scope=scope,
        )
    default = is_default_root(state)
    # The default store's names do not depend on its id: only another store's file is read here
    # (a sandbox supervisor then never opens the default store at all).
    store_id = store_id or (_IDENTITIES.get(state / STORE_FILE) if default else read_store_id(state / STORE_FILE))
    scope = "" if default or not store_id else store_id[:SCOPE_LEN]
    if env.get("PODNET_RUN"):
        run = Path(env["PODNET_RUN"])
    elif scope:
        run = DEFAULT_RUN.with_name(f"podnet-{scope}")
    elif default or (state / STORE_FILE).exists():
        run = DEFAULT_RUN  # the default store, or one older than identities (the names it was made with)
    else:
        run = DEFAULT_RUN.with_name("podnet-nostore")  # a read where no store exists: nothing runs
    parent = env.get("PODNET_CGROUP_PARENT") or "podnet"
    return Paths(
        root=state,
        run=run,
        netns_dir=Path(env.get("PODNET_NETNS_DIR") or "/run/netns"),
        cgroup_parent=f"{parent.rstrip('/')}/{scope}" if scope else parent,
        store_id=store_id,
        scope=scope,
    )


def link_alias(kind: str, object_id: str, node: str | None = None) -> str:
    """The mark for a link made by this process's store (drivers call this), by node."""
    found = paths()
    if found.store_id is None and store_url() is None and (store_id := read_store_id(found.store_file)):
        return Paths(**{**found.__dict__, "store_id": store_id}).link_alias(kind, object_id, node)
    return found.link_alias(kind, object_id, node)


NODE_FILE = "node-name"  # under the run directory: the name this host's agent registered


def node_name(run: Path | None = None) -> str:
    """This host's node on a cluster store: PODNET_NODE_NAME, else what its agent registered
    (<run>/node-name), else the host name made a valid node name. Every podnet process on the
    host (CLI, agent, CNI) asks this, so that they agree on whose blocks, records and kernel
    objects are whose."""
    named = os.environ.get("PODNET_NODE_NAME")
    if named:
        return named
    try:
        found = ((run or paths().run) / NODE_FILE).read_text().strip()
    except OSError:
        found = ""
    return found or default_node_name()


def default_node_name() -> str:
    """The host name, made a valid node name (lower case; other characters become '-')."""
    import socket  # lazy: a cluster store's first mark or record needs it, not every CLI call

    name = re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower()).strip("-.")[:63].strip("-.")
    return name or "node"
