"""`interp models`: the model specs, where each comes from, and whether it is available here."""

from __future__ import annotations

import json

from interp.commands import helped
from interp.models.availability import availability


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list model specs and whether each is available on this machine", **helped(
        "List the model specs every command's --model takes, and whether each can be loaded here (offline).",
        "interp models", "interp models --format json"))
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = availability()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["spec"]) for r in rows)
    print(f"{'spec':<{width}}  {'available':<9}  {'source':<12}  where / why")
    for r in rows:
        print(f"{r['spec']:<{width}}  {'yes' if r['available'] else 'no':<9}  {r['source']:<12}  {r['detail']}")
    print("\nAlso accepted: any hub id (org/name), a local HF folder, a .gguf file, an in-house checkpoint folder.")
    return 0
