"""`lorafleet keys ...`: tenant API keys and grants, through a running gateway's admin API.

    lorafleet keys create --tenant acme [--adapters support,billing] [--rpm N] [--tpm N]
                          [--budget-tokens N]          # prints the key once, on stdout
    lorafleet keys ls
    lorafleet keys revoke KEY_ID
    lorafleet keys grants --tenant acme                # what every key of acme reaches
    lorafleet keys grant --tenant acme billing [more ...]
    lorafleet keys revoke-grant --tenant acme billing

The routes they call are in routes/keys.py (`--url`, else `$LORAFLEET_URL`; the admin key from
`$LORAFLEET_ADMIN_KEY`). Grants belong to the tenant: `--adapters` on `create` gives a new
tenant's first key its grants and may only repeat an existing tenant's (docs/design/tenancy.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from lorafleet.admin_client import admin_request


def add_parser(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="manage tenant API keys and grants on a gateway")
    keys.add_argument("--url", default=None, help="gateway URL (default $LORAFLEET_URL)")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--adapters", default="", help="comma-separated: a new tenant's grants (never widened)"
    )
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--budget-tokens", type=int)
    create.set_defaults(func=_create)
    actions.add_parser("ls", help="list keys (never the secrets)").set_defaults(func=_ls)
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)
    grants = actions.add_parser("grants", help="list the adapters a tenant is granted")
    grants.add_argument("--tenant", required=True)
    grants.set_defaults(func=_grants)
    grant = actions.add_parser("grant", help="grant adapters to a tenant (all of its keys)")
    grant.add_argument("--tenant", required=True)
    grant.add_argument("adapters", nargs="+", metavar="ADAPTER")
    grant.set_defaults(func=_grant)
    revoke_grant = actions.add_parser("revoke-grant", help="take an adapter from a tenant")
    revoke_grant.add_argument("--tenant", required=True)
    revoke_grant.add_argument("adapter")
    revoke_grant.set_defaults(func=_revoke_grant)


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    return admin_request("lorafleet keys", args.url, method, path, body)


def _grants_path(tenant: str) -> str:
    return f"/v1/keys/tenants/{quote(tenant, safe='')}/grants"


def _create(args: argparse.Namespace) -> int:
    body = {
        "tenant": args.tenant,
        "adapters": [a for a in args.adapters.split(",") if a],
        "rpm": args.rpm,
        "tpm": args.tpm,
        "budget_tokens": args.budget_tokens,
    }
    created = _request(args, "POST", "/v1/keys", body)
    print(
        f"key id {created['key_id']} for tenant {created['tenant']} (shown once):", file=sys.stderr
    )
    print(created["key"])
    return 0


def _ls(args: argparse.Namespace) -> int:
    for key in _request(args, "GET", "/v1/keys")["data"]:
        state = "revoked" if key["revoked"] else "active"
        print(f"{key['key_id']}  {key['tenant']:<20} {state:<8} {','.join(key['adapters']) or '-'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _request(args, "DELETE", f"/v1/keys/{quote(args.key_id, safe='')}")
    print(f"revoked {args.key_id}")
    return 0


def _grants(args: argparse.Namespace) -> int:
    granted = _request(args, "GET", _grants_path(args.tenant))
    print(f"{granted['tenant']}: {','.join(granted['adapters']) or '-'}")
    return 0


def _grant(args: argparse.Namespace) -> int:
    granted = _request(args, "POST", _grants_path(args.tenant), {"adapters": args.adapters})
    print(f"{granted['tenant']} (every key) now reaches: {','.join(granted['adapters'])}")
    return 0


def _revoke_grant(args: argparse.Namespace) -> int:
    path = f"{_grants_path(args.tenant)}/{quote(args.adapter, safe='')}"
    _request(args, "DELETE", path)
    print(f"{args.tenant} no longer reaches {args.adapter}")
    return 0
