"""The identity recorded in a store file (`store_id.py ROOT/podnet.db`), read without podnet."""

import sqlite3
import sys

db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT value FROM store WHERE name = 'id'").fetchone()[0])
