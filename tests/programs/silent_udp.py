"""A UDP socket bound to argv[1] port argv[2] that never answers: a resolver that swallows queries."""

import signal
import socket
import sys

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
signal.pause()  # until killed; datagrams pile up unread
