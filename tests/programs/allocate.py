"""Allocate argv[1] MiB at once, then print "allocated": a memory hog for cgroup limits."""

import sys

block = bytearray(int(sys.argv[1]) * 1024 * 1024)
print("allocated")
