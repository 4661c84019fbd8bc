"""`infergate` command line: serve, and the admin's account operations against the server's database.

Admin commands open the same database the server uses (the data directory's SQLite file, or
INFERGATE_DATABASE_URL / `database_url`), so they work while the server runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infergate import __version__
from infergate.settings import ModelEntry, Settings, SettingsError, load_settings

__all__ = ["main"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infergate", description="A self-hosted Inference API.")
    parser.add_argument("--version", action="version", version=f"infergate {__version__}")
    parser.add_argument("--config", type=Path, help="a TOML file; it overrides only what it names")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the HTTP server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--config", type=Path, dest="serve_config", help=argparse.SUPPRESS)
    serve.add_argument(
        "--engine",
        action="store_true",
        help="engine mode: serve the catalog to a gateway in front (no accounts, limits or cache; only the "
        "service token in $INFERGATE_SERVICE_TOKEN)",
    )

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create = users.add_parser("create", help="create a user")
    create.add_argument("name")
    create.add_argument("--tier", default="free")
    create.add_argument("--admin", action="store_true", help="may use the /admin/ HTTP API")
    set_tier = users.add_parser("set-tier", help="move a user to another tier")
    set_tier.add_argument("name")
    set_tier.add_argument("tier")
    users.add_parser("list", help="list users")
    disable = users.add_parser("disable", help="refuse a user's tokens and sessions (their usage is kept)")
    disable.add_argument("name")
    enable = users.add_parser("enable", help="let a disabled user in again")
    enable.add_argument("name")

    tokens = sub.add_parser("tokens", help="manage API tokens").add_subparsers(dest="action", required=True)
    tcreate = tokens.add_parser("create", help="create a token for a user (printed once, last line)")
    tcreate.add_argument("name")
    tlist = tokens.add_parser("list", help="list a user's tokens")
    tlist.add_argument("name")
    revoke = tokens.add_parser("revoke", help="revoke a token (the token, or its prefix)")
    revoke.add_argument("token")

    usage = sub.add_parser("usage", help="requests and tokens per user and model")
    usage.add_argument("name", nargs="?")

    models = sub.add_parser("models", help="the catalog").add_subparsers(dest="action", required=True)
    listing = models.add_parser("list", help="list models: task, tiers, source, and state and memory when serving")
    listing.add_argument("--url", help="the running server to ask for states (default: the configured host:port)")
    pull = models.add_parser("pull", help="download a catalog model's files ahead of its first request")
    pull.add_argument("id", help="a model id from `infergate models list`")

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="action", required=True)
    engine = bench.add_parser("engine", help="the engine at 1, N/4 and N streams against transformers and llama.cpp")
    engine.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    engine.add_argument("--model", help="a model source (directory, .gguf, hub id); default: the packaged model")
    engine.add_argument("--config-shape", choices=["smollm2-135m", "llama-1.1b"], help="random weights, a real shape")
    engine.add_argument("--streams", type=int, default=16, help="concurrent streams at the top level (N)")
    engine.add_argument("--new-tokens", type=int, default=64)
    engine.add_argument("--stagger", type=float, default=0.05, help="seconds between arrivals")
    engine.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    engine.add_argument(
        "--runner", default="auto", choices=["auto", "torch", "llama.cpp"], help="what serves the packaged model"
    )
    engine.add_argument("--serial-requests", type=int, default=4, help="requests for the one-at-a-time baseline")
    engine.add_argument("--json", action="store_true", help="end with one line of JSON")
    return parser


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _check_tier(settings: Settings, tier: str) -> None:
    tiers = [t for t in settings.tiers if t != "anonymous"]
    if tier not in tiers:
        raise SystemExit(f"infergate: unknown tier {tier!r}; the tiers are {', '.join(tiers)}")


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    from infergate.app import open_store
    from infergate.store.store import StoreError

    store = open_store(settings)
    try:
        return _run_admin(args, settings, store)
    except StoreError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _run_admin(args: argparse.Namespace, settings: Settings, store: Any) -> int:
    if args.command == "users":
        if args.action == "create":
            _check_tier(settings, args.tier)
            user = store.create_user(args.name, args.tier, args.admin)
            print(f"created user {user.name} on the {user.tier} tier{' (admin)' if user.admin else ''}")
            print(f"next: infergate tokens create {user.name}")
        elif args.action == "set-tier":
            _check_tier(settings, args.tier)
            user = store.set_tier(args.name, args.tier)
            print(f"{user.name} is now on the {user.tier} tier (running servers apply it within seconds)")
        elif args.action in ("disable", "enable"):
            user = store.set_disabled(args.name, args.action == "disable")
            print(f"{user.name} is {args.action}d (running servers apply it within seconds)")
        else:
            users = [(u.name, u.tier, "yes" if u.admin else "", u.created_at.isoformat(timespec="seconds"),
                      "disabled" if u.disabled else "active", "sso" if u.sso else "token")
                     for u in store.list_users()]  # fmt: skip
            print(_table(("name", "tier", "admin", "created", "state", "sign-in"), users))
    elif args.command == "tokens":
        if args.action == "create":
            token, info = store.create_token(args.name)
            print(f"token for {info.user_name} (shown once; only its hash is stored):")
            print(token)
        elif args.action == "list":
            rows = [
                (t.prefix + "…", t.created_at.isoformat(timespec="seconds"),
                 t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never",
                 "revoked" if t.revoked_at else "active")
                for t in store.list_tokens(args.name)
            ]  # fmt: skip
            print(_table(("token", "created", "last used", "state"), rows))
        else:
            info = store.revoke_token(args.token)
            print(f"revoked {info.prefix}… of {info.user_name} (running servers refuse it within seconds)")
    elif args.command == "usage":
        usage = [(r.user_name, r.model, r.requests, r.prompt_tokens, r.generated_tokens, r.cache_hits, r.errors)
                 for r in store.usage_summary(args.name)]  # fmt: skip
        print(_table(("user", "model", "requests", "prompt_tokens", "generated", "cache_hits", "errors"), usage))
    return 0


def _models(settings: Settings, url: str | None) -> int:
    url = url or f"http://{settings.server.host}:{settings.server.port}"
    live = _live_models(url)
    rows = [
        (
            m.id,
            m.task,
            ", ".join(m.tiers) if m.tiers else "all",
            m.source or ", ".join(m.remote or ()),
            "startup" if m.load_at_startup else "first use",
            live.get(m.id, {}).get("state", "-") if live is not None else "not serving",
            f"{live[m.id]['memory_mb']:.0f} MB" if live is not None and live.get(m.id, {}).get("memory_mb") else "-",
            _runner(m, live),
        )
        for m in settings.models
    ]
    print(_table(("id", "task", "tiers", "source", "loads at", "state", "memory", "runner"), rows))
    replicas = [
        (m.id, r["url"], r["state"], r["in_flight"], r.get("last_error") or "-")
        for m in settings.models
        for r in (live or {}).get(m.id, {}).get("replicas", [])
    ]
    if replicas:
        print()
        print(_table(("remote model", "replica", "state", "in flight", "last error"), replicas))
    if live is None:
        print(f"(no server answered at {url}: states and memory show while `infergate serve` runs; --url URL)")
    return 0


def _runner(entry: ModelEntry, live: dict[str, dict[str, Any]] | None) -> str:
    """What computes a text generation model's tokens: as the server says, or as it would choose."""
    if entry.task != "text-generation":
        return "-"
    if live is not None and live.get(entry.id, {}).get("runner"):
        return str(live[entry.id]["runner"])
    if entry.remote is not None:
        return f"remote ({entry.protocol})"
    from infergate.engines.textgen.choice import choose_runner

    return choose_runner(entry.runner, entry.source)


def _pull(settings: Settings, model_id: str) -> int:
    """Download a hub model into huggingface_hub's cache (its progress bars, HF_HOME, HF_TOKEN), so that the
    first request does not wait for it; models from packages or local paths have nothing to download."""
    entry = next((m for m in settings.models if m.id == model_id), None)
    if entry is None:
        known = ", ".join(m.id for m in settings.models)
        print(f"infergate: {model_id} is not in the catalog ({known}); add a [[models]] entry first", file=sys.stderr)
        return 2
    source = entry.source
    if source.startswith(("package:", "assemble:", "/", ".", "~")) or Path(source).exists():
        print(f"{model_id} comes from {source}, which is local: nothing to download")
        return 0
    from huggingface_hub import snapshot_download

    try:
        print(snapshot_download(source))
    except Exception as exc:  # offline, unknown id, gated model: say which and what to check
        print(
            f"infergate: could not download {source}: {type(exc).__name__}: {exc}. Check the id, the network "
            "(HF_HUB_OFFLINE) and, for gated models, HF_TOKEN",
            file=sys.stderr,
        )
        return 1
    return 0


def _live_models(url: str) -> dict[str, dict[str, Any]] | None:
    """Each model's state and memory from a running server's GET /v1/models (loopback, 2 s), or None."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v1/models", timeout=2) as response:
            return {m["id"]: m for m in json.load(response)["data"]}
    except (OSError, ValueError, KeyError):
        return None


def _bench(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format=_FORMAT)
    if args.streams < 1 or args.new_tokens < 1:
        print("infergate: --streams and --new-tokens must be at least 1", file=sys.stderr)
        return 2
    if args.device == "cuda" and not (args.config_shape or args.model):
        print("infergate: on a GPU, name --config-shape or --model (the packaged model is for CPUs)", file=sys.stderr)
        return 2
    from infergate.benchmarks.engine import run  # torch and transformers only when benchmarking

    return run(
        device=args.device,
        model=args.model,
        config_shape=args.config_shape,
        streams=args.streams,
        new_tokens=args.new_tokens,
        stagger=args.stagger,
        dtype=args.dtype,
        runner=args.runner,
        serial_requests=min(args.serial_requests, args.streams),
        as_json=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = getattr(args, "serve_config", None) or args.config
    overrides: dict[str, Any] = {}
    if args.command == "serve":
        overrides = {"server": {"host": args.host, "port": args.port, "role": "engine" if args.engine else None}}
    try:
        settings = load_settings(config, overrides)
    except SettingsError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 2
    if args.command == "models" and args.action == "pull":
        return _pull(settings, args.id)
    if args.command == "models":
        return _models(settings, args.url)
    if args.command == "bench":
        return _bench(args)
    if args.command != "serve":
        logging.basicConfig(level=logging.WARNING, format=_FORMAT)
        return _admin(args, settings)
    logging.basicConfig(level=logging.INFO, format=_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call to a remote engine is noise
    # The data directory keeps a log of its own, beside the database and caches.
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "infergate.log")
    handler.setFormatter(logging.Formatter(_FORMAT))
    logging.getLogger().addHandler(handler)
    from infergate.app import run  # heavy imports only when serving

    try:
        run(settings)
    except SettingsError as exc:
        print(f"infergate: {exc}", file=sys.stderr)
        return 2
    return 0
