"""`ftc api CONFIG`: OpenAI's fine-tuning API on this machine (runtime/api/)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ftc.cli.common import UsageError, err, out, report
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS


def add_api(verbs) -> None:
    p = verbs.add_parser(
        "api",
        help="serve OpenAI's fine-tuning API (files, jobs, events, checkpoints, chat) on this machine",
        description=(
            "An OpenAI-compatible fine-tuning service: code written for OpenAI's fine-tuning API (the official openai "
            "client) runs unchanged with base_url pointed here. Each job becomes an ftc spec, build and run in its own "
            "folder under the config's state folder; jobs run one at a time, survive a restart, and their merged "
            "models answer /v1/chat/completions at the same address once vLLM passes the parity gate. CONFIG is a "
            "TOML file: [server] host, port, api_key_env, state; [models.NAME] the spec each method type starts from."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="the server's settings file, e.g. api.toml")
    p.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: server.port, 8100)")
    p.set_defaults(func=cmd_api)


def cmd_api(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if not path.is_file():
        raise UsageError(f"config not found: {args.config}")
    from ftc.compiler.diagnostics import SpecError
    from ftc.runtime.api.config import load_config
    from ftc.runtime.serve.settings import is_loopback

    try:
        config = load_config(path)
    except SpecError as exc:
        report(exc.diagnostics, {str(path): path.read_text(encoding="utf-8")})
        return EXIT_PROBLEMS
    host = args.host or config.server.host
    port = args.port or config.server.port
    env = config.server.api_key_env
    key = os.environ.get(env) if env else None
    if env and not key:
        raise UsageError(f"server.api_key_env names {env}, which is not set: export {env}=... (the key clients send)")
    if not is_loopback(host) and key is None:
        raise UsageError(
            f"--host {host} without a key would let anyone who reaches the port train and ask models: "
            "set server.api_key_env"
        )
    import uvicorn

    from ftc.runtime.api.app import create_app

    app = create_app(config, key)
    auth = f"; clients send the key in ${env}" if env else "; no API key"
    models = ", ".join(sorted(config.models))
    out.print(f"ftc api: http://{host}:{port}/v1 ({len(config.models)} base model(s): {models}{auth})", markup=False)
    out.print(f"ftc api: jobs and files in {config.state}; Ctrl-C stops (a running job resumes on the next start)",
              markup=False)
    out.file.flush()
    uvicorn.run(app, host=host, port=port, log_level="warning")
    err.print("ftc api: stopped", markup=False)
    return EXIT_OK
