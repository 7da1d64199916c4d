"""Time one TCP connect to argv[1] port argv[2]: prints "refused <seconds>", "ok <seconds>" or
"other <seconds> <error>"."""

import socket
import sys
import time

started = time.time()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("ok", time.time() - started)
except ConnectionRefusedError:
    print("refused", time.time() - started)
except OSError as e:
    print("other", time.time() - started, e)
