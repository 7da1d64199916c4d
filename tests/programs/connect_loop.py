"""Try a TCP connection to argv[1]:argv[2] every 20 ms until stdin closes; print how many
attempts there were and how many connected (a fail-closed check: the count must stay 0)."""

import socket
import sys
import threading

done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
tries = connected = 0
while not done.is_set():
    tries += 1
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.05):
            connected += 1
    except OSError:
        pass
    done.wait(0.02)
print(tries, connected, flush=True)
