"""`podnet trace` for many pairs in one process (the venv's python, PYTHONPATH set by the
test): argv[1] is the state root, the rest are SRC DST[:PORT][/PROTO] pairs joined by a
space. Prints a JSON object "SRC DST" -> verdict."""

import json
import sys

from podnet.api.context import open_context
from podnet.policy import trace

store = open_context(sys.argv[1] if sys.argv[1] != "-" else None, readonly=True).store
out = {}
for pair in sys.argv[2:]:
    src, dst = pair.split(" ")
    out[pair] = trace.trace(store, src, dst)["verdict"]
print(json.dumps(out))
