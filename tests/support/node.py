"""Node.js for the tests that run real JavaScript (the JS clients, the OpenID provider): the node binary, with a
folder's pinned npm packages installed from its committed lockfile (`npm ci`) when they are missing or stale."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["node_with_packages"]


def _installed_versions_match(folder: Path) -> bool:
    pins: dict[str, str] = json.loads((folder / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = folder / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def node_with_packages(folder: Path, why: str) -> str:
    """The node binary, once ``folder``'s pinned packages are installed; skips the test (saying ``why`` it needs
    Node) where node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"{why}: they need `node` (20+) and `npm` on PATH")
    if not _installed_versions_match(folder):
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"npm ci failed in {folder}:\n{done.stdout}\n{done.stderr}"
    return node
