"""nftables transactions through libnftables in this process: the JSON documents of nft.apply
without starting `nft` for each one.

Why: a small change to a large table (the policy table at 1,000 policies x 1,000 endpoints)
costs 7-10 ms of nft's own work, against 17-30 ms through `nft -j -f -` (the process start and
its dynamic linking, paid on every change). The document is the same JSON nft.apply sends
(never nft's text syntax), so nothing a user gives can change a command's meaning. Where the
library cannot be loaded, nft.apply runs the binary instead: same result, slower.

One context per process, used under a lock (libnftables contexts are not thread-safe).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from typing import Any

from podnet.dataplane import nft
from podnet.errors import KernelError

NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4  # also makes nft_run_cmd_from_buffer parse its input as JSON (1.0.6)

_lock = threading.Lock()
_ctx: tuple[Any, int] | None = None  # (library, context)
_unavailable = False


def _context() -> tuple[Any, int] | None:
    global _ctx, _unavailable
    if _ctx is not None or _unavailable:
        return _ctx
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
    except OSError:
        _unavailable = True
        return None
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
    ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
    if not ctx:
        _unavailable = True
        return None
    lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
    lib.nft_ctx_buffer_output(ctx)  # nothing printed on this process's stdout
    lib.nft_ctx_buffer_error(ctx)
    _ctx = (lib, ctx)
    return _ctx


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
        if lib.nft_run_cmd_from_buffer(ctx, document) != 0:
            stderr = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
            raise KernelError(f"nft transaction failed: {nft.first_error_line(stderr)}")
        lib.nft_ctx_get_output_buffer(ctx)  # each read empties its buffer for the next call
        lib.nft_ctx_get_error_buffer(ctx)
