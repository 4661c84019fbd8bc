"""Which runner serves a text generation model: llama.cpp for GGUF files on a machine without a GPU, else torch.

llama.cpp computes on the GGUF's quantized weights as they are (7x the tokens/s of the dequantized float32
model on the default catalog's SmolLM2, bench/RESULTS.md); on a GPU, and for every other format, the PyTorch
runner serves. ``[[models]] runner`` in the config insists on one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

from infergate.catalog.catalog import is_gguf_source

if TYPE_CHECKING:  # the runners import torch or llama.cpp: only the one chosen is imported
    from infergate.engines.textgen.rows import ModelRunner

__all__ = ["RunnerLoader", "choose_runner", "runner_loader"]

# (source, threads, dtype, max_rows, kv_cache_bytes) -> a loaded runner; max_rows: the most sequences the engine
# runs together, kv_cache_bytes: its KV cache budget
RunnerLoader = Callable[[str, int | None, str, int, int], "ModelRunner"]


def choose_runner(setting: str, source: str) -> str:
    """``setting`` is "auto", "torch" or "llama.cpp" (the settings check that "llama.cpp" gets a GGUF)."""
    if setting != "auto":
        return setting
    if not is_gguf_source(source) or importlib.util.find_spec("llama_cpp") is None:
        return "torch"
    import torch

    return "torch" if torch.cuda.is_available() else "llama.cpp"


def runner_loader(name: str) -> RunnerLoader:
    """The chosen runner's loader; its module (torch's or llama.cpp's) is imported when a model loads."""
    return _load_llamacpp if name == "llama.cpp" else _load_torch


def _load_torch(source: str, threads: int | None, dtype: str, max_rows: int, kv_cache_bytes: int) -> ModelRunner:
    from infergate.engines.textgen.runner import load_torch_runner

    return load_torch_runner(source, threads, dtype, max_rows, kv_cache_bytes)


def _load_llamacpp(source: str, threads: int | None, dtype: str, max_rows: int, kv_cache_bytes: int) -> ModelRunner:
    try:
        from infergate.engines.textgen.llamacpp import load_llamacpp_runner
    except ImportError as exc:
        raise ValueError(
            f'runner = "llama.cpp" needs llama-cpp-python, which is not installed ({exc}); `make install` builds '
            'it (pip install llama-cpp-python==0.3.36), or set runner = "torch"'
        ) from exc
    return load_llamacpp_runner(source, threads, dtype, max_rows, kv_cache_bytes)
