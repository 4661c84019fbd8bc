"""What a loaded model holds in memory, and giving memory back when it is unloaded."""

from __future__ import annotations

import ctypes
import gc
import sys
from typing import Any

__all__ = ["module_bytes", "return_freed_memory"]


def module_bytes(*modules: Any) -> int:
    """Bytes of the parameters and buffers of torch modules (each tensor once: tied weights count once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            try:
                total += tensor.numel() * tensor.element_size()
            except RuntimeError:  # a tensor type without storage size (oneDNN-packed): count it as dense
                total += tensor.to_dense().numel() * tensor.element_size()
    return total


def return_freed_memory() -> None:
    """Hand freed memory back to the OS: glibc keeps freed heap pages otherwise (hundreds of MB per model)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc (musl): nothing to trim
            pass
