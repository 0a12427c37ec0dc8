"""`lorafleet serve`: the gateway, plus supervised vLLM engines in local mode.

lorafleet serve                                   # default model, engine + gateway on :8000
lorafleet serve --config serve.yaml --port 9000
lorafleet serve --engine http://10.0.0.5:8000 --served-model-name smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorafleet.server.engine.supervisor import EngineSupervisor
    from lorafleet.server.settings import Settings

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the OpenAI-compatible gateway")
    parser.add_argument("--config", type=Path, help="YAML settings file (flags override it)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (default 8000)")
    parser.add_argument("--model", help="local mode: model id, Hugging Face id or directory")
    parser.add_argument(
        "--engine", action="append", dest="engine_urls", metavar="URL",
        help="cluster mode: URL of a running vLLM engine (repeatable); starts no engine",
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
            model=args.model,
            engine_urls=args.engine_urls,
            served_model_name=args.served_model_name,
            replicas=args.replicas,
            log_level=args.log_level,
            log_format=args.log_format,
        )
    except (ValidationError, FileNotFoundError) as exc:
        print(f"lorafleet serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from lorafleet.server.runner import serve

    return serve(settings)


def build_supervisor(settings: Settings) -> EngineSupervisor:
    from lorafleet.adapters.base_models import ModelFetchError, fetch_model
    from lorafleet.server.engine.supervisor import (
        EngineProcess,
        EngineSpec,
        EngineSupervisor,
        has_cuda_device,
        resolve_dtype,
        split_cores,
    )

    try:
        model_dir = fetch_model(settings.model, settings.cache_dir)
    except ModelFetchError as exc:
        raise SystemExit(f"lorafleet serve: {exc}") from exc
    cores: list[str | None] = [settings.engine_cpu_threads] * settings.replicas
    if settings.engine_cpu_threads is None and not has_cuda_device():
        cores = list(split_cores(settings.replicas))
    processes = []
    for index in range(settings.replicas):
        spec = EngineSpec(
            model_dir=model_dir,
            served_model_name=settings.base_model_id,
            host=settings.engine_host,
            port=settings.engine_port_base + index,
            dtype=resolve_dtype(settings.engine_dtype),
            max_model_len=settings.engine_max_model_len,
            max_num_seqs=settings.engine_max_num_seqs,
            kv_cache_gib=settings.engine_kv_cache_gib,
            enable_lora=settings.engine_enable_lora,
            max_loras=settings.engine_max_loras,
            max_lora_rank=settings.engine_max_lora_rank,
            cpu_threads=cores[index],
            extra_args=tuple(settings.engine_extra_args),
            log_level="INFO" if settings.log_level == "debug" else "WARNING",
        )
        processes.append(EngineProcess(spec, f"engine-{index}", settings.engine_restart_backoff_s))
    return EngineSupervisor(processes)
