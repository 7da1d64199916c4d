"""nftables transactions through libnftables in this process: the JSON documents of nft.apply
without starting `nft` for each one.

Why: a small change to a large table (the policy table at 1,000 policies x 1,000 endpoints)
costs 7-10 ms of nft's own work, against 17-30 ms through `nft -j -f -` (the process start and
its dynamic linking, paid on every change). The document is the same JSON nft.apply sends
(never nft's text syntax), so nothing a user gives can change a command's meaning. Where the
library cannot be loaded, nft.apply runs the binary instead: same result, slower.

One context per network namespace the process has used (its netlink socket belongs to the
namespace it was opened in; a thread may have entered another), under a lock (libnftables
contexts are not thread-safe).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import threading
from typing import Any

from podnet.dataplane import nft
from podnet.errors import KernelError

NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4  # also makes nft_run_cmd_from_buffer parse its input as JSON (1.0.6)

_lock = threading.Lock()
_lib: Any = None
_contexts: dict[int, int] = {}  # network namespace (inode) -> context
_unavailable = False


def _context() -> tuple[Any, int] | None:
    global _lib, _unavailable
    if _unavailable:
        return None
    try:
        netns = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        netns = 0
    if netns in _contexts:
        return _lib, _contexts[netns]
    if _lib is None:
        try:
            _lib = _load()
        except OSError:
            _unavailable = True
            return None
    ctx = _lib.nft_ctx_new(NFT_CTX_DEFAULT)
    if not ctx:
        _unavailable = True
        return None
    _lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
    _lib.nft_ctx_buffer_output(ctx)  # nothing printed on this process's stdout
    _lib.nft_ctx_buffer_error(ctx)
    _contexts[netns] = ctx
    return _lib, ctx


def _load() -> Any:
    lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


def apply(commands: list[nft.Command]) -> None:
    """Apply `commands` (nft JSON command objects) as ONE atomic transaction, as nft.apply."""
    if not commands:
        return
    with _lock:
        loaded = _context()
        if loaded is None:
            nft.apply(commands)
            return
        lib, ctx = loaded
        document = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}).encode()
        failed = lib.nft_run_cmd_from_buffer(ctx, document) != 0
        lib.nft_ctx_get_output_buffer(ctx)  # each read empties its buffer for the next call
        stderr = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if failed:
            raise KernelError(f"nft transaction failed: {nft.first_error_line(stderr)}")
