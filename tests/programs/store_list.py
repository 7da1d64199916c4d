"""What the host's store holds under a prefix, as JSON: `keys PREFIX` prints the keys,
`docs PREFIX` the documents. Run with the venv's python (it imports podnet)."""

import json
import sys

from podnet.store import open_store

what, prefix = sys.argv[1], sys.argv[2]
items = open_store().list(prefix)
print(json.dumps([key if what == "keys" else doc for key, doc in items]))
