"""`lorafleet model fetch` and `lorafleet adapters ...`.

    lorafleet model fetch                          # the embedded default, smollm2-135m-instruct
    lorafleet model fetch meta-llama/Llama-3.1-8B-Instruct
    lorafleet model fetch /models/my-llama         # prints the model directory as its last line
    lorafleet model smoke [--record MODEL_DIR]     # score a served model on a fixed smoke set

    lorafleet adapters add support /srv/adapters/support-v3 [--base-model ID]
    lorafleet adapters ls
    lorafleet adapters rm support@2
    lorafleet adapters rollback support [--version 1]

The adapters commands talk to a running gateway's admin API (`--url`, or `$LORAFLEET_URL`;
`$LORAFLEET_ADMIN_KEY` when auth is on); this package never imports the server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lorafleet.adapters import smoke
from lorafleet.admin_client import admin_request


def add_parser(subparsers: Any) -> None:
    model = subparsers.add_parser("model", help="base models")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    fetch = model_sub.add_parser("fetch", help="fetch or build a base model, print its directory")
    fetch.add_argument("model", nargs="?", help="model id, Hugging Face id or local directory")
    fetch.add_argument("--cache-dir", type=Path, help="default: $LORAFLEET_CACHE_DIR or ~/.cache")
    fetch.add_argument("--verify", action="store_true", help="re-hash the weights")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=fetch_main)
    smoke.add_parser(model_sub)
    add_adapters_parser(subparsers)


def fetch_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.base_models import ModelFetchError, fetch_model, verify_model

    try:
        path = fetch_model(args.model, args.cache_dir, progress=not args.quiet)
        if args.verify:
            verify_model(path)
    except ModelFetchError as exc:
        print(f"lorafleet model fetch: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


# --- lorafleet adapters add|ls|rm|rollback: the admin API over HTTP -----------------------------


def add_adapters_parser(subparsers: Any) -> None:
    adapters = subparsers.add_parser("adapters", help="manage LoRA adapters on a running gateway")
    adapters.add_argument(
        "--url", default=None, help="gateway URL (default $LORAFLEET_URL or http://127.0.0.1:8000)"
    )
    actions = adapters.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register a new version of an adapter")
    add.add_argument("name")
    add.add_argument("source", help="directory under an allowed root, hf://org/repo, s3://...")
    add.add_argument("--base-model", help="base model id (default: from adapter_config.json)")
    add.set_defaults(func=_add)
    ls = actions.add_parser("ls", help="list adapters and their versions")
    ls.add_argument("--json", action="store_true", help="print the raw JSON")
    ls.set_defaults(func=_ls)
    rm = actions.add_parser("rm", help="remove an adapter (NAME) or one version (NAME@VERSION)")
    rm.add_argument("ref")
    rm.set_defaults(func=_rm)
    rollback = actions.add_parser("rollback", help="point the alias at an earlier version")
    rollback.add_argument("name")
    rollback.add_argument("--version", type=int, help="default: the previous version")
    rollback.set_defaults(func=_rollback)


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    return admin_request("lorafleet adapters", args.url, method, path, body)


def _add(args: argparse.Namespace) -> int:
    source = args.source
    if "://" not in source and Path(source).exists():
        source = str(Path(source).resolve())  # the gateway takes absolute paths only
    body = {"name": args.name, "source": source, "base_model": args.base_model}
    record = _request(args, "POST", "/v1/adapters", body)
    print(f"{record['name']}@{record['version']} registered (rank {record['rank']}, "
          f"base {record['base_model']}, sha256 {record['sha256'][:12]})")  # fmt: skip
    return 0


def _ls(args: argparse.Namespace) -> int:
    import json

    data = _request(args, "GET", "/v1/adapters")["data"]
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'NAME':<24} {'CURRENT':>7} {'VERSIONS':<16} {'BASE MODEL':<28} {'RANK':>4}")
    for adapter in data:
        live = [str(v["version"]) for v in adapter["versions"] if v["state"] == "registered"]
        print(
            f"{adapter['name']:<24} {adapter['current_version'] or '-':>7} "
            f"{','.join(live) or '-':<16} {adapter.get('base_model', '-'):<28} "
            f"{adapter.get('rank', '-'):>4}"
        )
    return 0


def _rm(args: argparse.Namespace) -> int:
    adapter = _request(args, "DELETE", f"/v1/adapters/{args.ref}")
    print(f"removed {args.ref}; current version now {adapter['current_version'] or 'none'}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    adapter = _request(
        args, "POST", f"/v1/adapters/{args.name}/rollback", {"version": args.version}
    )
    print(f"{args.name} now points at version {adapter['current_version']}")
    return 0
