"""`infergate` command line: argv -> Settings -> app.run()."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from infergate import __version__
from infergate.settings import SettingsError, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infergate", description="A self-hosted Inference API.")
    parser.add_argument("--version", action="version", version=f"infergate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--config", type=Path, help="a TOML file; it overrides only what it names")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        try:
            settings = load_settings(args.config, {"server": {"host": args.host, "port": args.port}})
        except SettingsError as exc:
            print(f"infergate: {exc}", file=sys.stderr)
            return 2
        # The data directory keeps a log of its own, beside the database and caches.
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / "infergate.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        from infergate.app import run  # heavy imports only when serving

        run(settings)
    return 0
