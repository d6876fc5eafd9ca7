"""``icd serve --index DIR [--host 127.0.0.1] [--port 8000] [--token T]``: the HTTP service on one index."""
from __future__ import annotations

import argparse
import os
import sys

from matcher.cli.common import ConfigError, add_model_arguments, config_from_args

__all__ = ["add_serve_arguments", "run_serve"]

EXIT_ERROR = 2
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="DIR", help="index folder built by `icd index` (never created "
                   "here); POST/DELETE /references change it")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--token", default=None, help="bearer token every request but /health and /docs must carry "
                   "(default: $ICD_SERVICE_TOKEN; prefer the variable: arguments are visible to other users)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB",
                   help="largest image file accepted, MB (default 20; larger uploads get 413)")
    p.add_argument("--max-connections", type=int, default=32, metavar="N",
                   help="connections served at once; more get 503 (default 32: bounds the memory held by uploads "
                        "at N x --max-upload-mb)")
    p.add_argument("--inference-slots", type=int, default=1, metavar="N",
                   help="model inferences run at once (default 1; see bench/RESULTS.md, issue 16)")
    add_model_arguments(p)


def run_serve(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR

    try:
        import uvicorn

        from matcher.service.app import create_app
    except ImportError as exc:
        return fail(f"`icd serve` needs FastAPI and uvicorn: pip install \"icd-matcher[serve]\" ({exc})")
    from matcher.references.disk.store import IndexMismatchError, IndexStore, IndexStoreError
    from matcher.service import TOKEN_ENV
    from matcher.service.core import index_problem

    if not 0 <= args.port <= 65535:
        return fail(f"--port must be in 0..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        return fail(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.max_connections < 1:
        return fail(f"--max-connections must be >= 1, got {args.max_connections}")
    if args.inference_slots < 1:
        return fail(f"--inference-slots must be >= 1, got {args.inference_slots}")
    problem = index_problem(args.index)
    if problem is not None:
        return fail(problem)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    try:
        with IndexStore.open(args.index) as stored:  # start from the settings the index was built with
            base = stored.config.to_dict()
        config = config_from_args(args, base)
        app = create_app(args.index, token=token, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                         config=config, inference_slots=args.inference_slots)
    except (ConfigError, IndexStoreError, IndexMismatchError) as exc:
        return fail(str(exc))
    core = app.state.core
    quiet = getattr(args, "verbosity", 0) < 0
    if token is None and args.host not in _LOOPBACK:
        print(f"warning: serving on {args.host} without a token: anyone who can reach it can change the index "
              f"(set --token or ${TOKEN_ENV})", file=sys.stderr)
    if not quiet:
        print(f"icd serve: index {core.index_path} ({core.health()['references']} references), "
              f"http://{args.host}:{args.port} (docs at /docs), token {'required' if token else 'not set'}",
              file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if quiet else "info",
                access_log=not quiet, limit_concurrency=args.max_connections)
    return 0
