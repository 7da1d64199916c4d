"""`podnet trace` for many pairs in one process (the venv's python, PYTHONPATH set by the
test): argv[1] is the state root ("-": the default, or PODNET_STORE's etcd), the rest are
SRC DST[:PORT][/PROTO] pairs joined by a space. Prints a JSON object "SRC DST" -> verdict.

Every pair is traced against one reading of the store (each list and get asked once): trace
only reads, and on etcd each pair would otherwise list every document again."""

import json
import sys
from typing import Any

from podnet.api.context import open_context
from podnet.policy import trace


class Snapshot:
    """The store's reads, each made once."""

    def __init__(self, store: Any) -> None:
        self.store, self.lists, self.gets = store, {}, {}

    def list(self, prefix: str) -> Any:
        if prefix not in self.lists:
            self.lists[prefix] = self.store.list(prefix)
        return self.lists[prefix]

    def get(self, key: str) -> Any:
        if key not in self.gets:
            self.gets[key] = self.store.get(key)
        return self.gets[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


store = Snapshot(open_context(sys.argv[1] if sys.argv[1] != "-" else None, readonly=True).store)
out = {}
for pair in sys.argv[2:]:
    src, dst = pair.split(" ")
    out[pair] = trace.trace(store, src, dst)["verdict"]
print(json.dumps(out))
