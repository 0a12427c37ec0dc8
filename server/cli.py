"""`lorafleet serve`: the gateway, plus supervised vLLM engines in local mode.

lorafleet serve                                   # default model, engine + gateway on :8000
lorafleet serve --config serve.yaml --port 9000
lorafleet serve --model smollm2-135m-instruct --model merged=runs/merged   # two base models
lorafleet serve --engine http://10.0.0.5:8000 --served-model-name smollm2-135m-instruct
lorafleet serve --model llama=meta-llama/Llama-3.1-8B-Instruct --engine llama=http://10.0.0.5:8000 \
                --model qwen=Qwen/Qwen2.5-7B-Instruct --engine qwen=http://10.0.0.6:8000
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the OpenAI-compatible gateway")
    parser.add_argument("--config", type=Path, help="YAML settings file (flags override it)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (default 8000)")
    parser.add_argument(
        "--model", action="append", dest="models", metavar="[NAME=]SOURCE",
        help="a base model to serve (repeatable): default id, Hugging Face id or directory, "
        "served as NAME (default: SOURCE's last part); local mode starts its engines",
    )  # fmt: skip
    parser.add_argument(
        "--engine", action="append", dest="engines", metavar="[NAME=]URL",
        help="cluster mode: URL of a running vLLM engine of base model NAME (repeatable); "
        "starts no engine",
    )  # fmt: skip
    parser.add_argument("--served-model-name", help="base model id clients send as `model`")
    parser.add_argument("--replicas", type=int, help="local mode: engine processes to run")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lorafleet.server.settings import load_settings

    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            served_model_name=args.served_model_name,
            replicas=args.replicas,
            log_level=args.log_level,
            log_format=args.log_format,
            **model_flags(args.models or [], args.engines or []),
        )
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"lorafleet serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from lorafleet.server.runner import serve

    return serve(settings)


def _named(item: str) -> tuple[str | None, str]:
    """`NAME=VALUE` -> (NAME, VALUE); a plain path, id or URL -> (None, item)."""
    name, sep, value = item.partition("=")
    if sep and name and not any(char in name for char in "/:"):
        return name, value
    return None, item


def model_flags(models: list[str], engines: list[str]) -> dict[str, Any]:
    """Settings from repeatable `--model [NAME=]SOURCE` and `--engine [NAME=]URL` flags.

    Without any NAME=, one `--model` and plain `--engine` URLs keep their single-model meaning
    (`model`, `engine_urls`). Otherwise they become the `models` list, in order of appearance.
    """
    parsed_models = [_named(item) for item in models]
    parsed_engines = [_named(item) for item in engines]
    if len(models) <= 1 and all(name is None for name, _ in parsed_models + parsed_engines):
        return {"model": models[0] if models else None, "engine_urls": engines or None}
    from lorafleet.server.settings import model_name_for

    specs: dict[str, dict[str, Any]] = {}
    for name, source in parsed_models:
        specs.setdefault(name or model_name_for(source), {})["source"] = source
    for name, url in parsed_engines:
        if name is None:
            if len(specs) != 1:
                raise ValueError(f"--engine {url}: several models are served, write NAME={url}")
            name = next(iter(specs))
        specs.setdefault(name, {}).setdefault("engine_urls", []).append(url)
    return {"models": [{"name": name, **spec} for name, spec in specs.items()]}
