"""Hold the write lock of the SQLite database argv[1] (BEGIN IMMEDIATE): prints "held", then
keeps the lock until killed, as another process busy with the store would."""

import signal
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
signal.pause()
