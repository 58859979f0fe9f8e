"""`python -m components render --stack S --out DIR` | `python -m components apply --stack S`."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .render import render_tree
from .runner import LAB_DIR, apply, load_or_create_secrets
from .secrets import ClusterSecrets
from .stack import load_stack_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write every node's files to DIR/<node>/<server path> (placeholders)")
    render.add_argument("--stack", required=True)
    render.add_argument("--out", required=True)
    run = sub.add_parser("apply", help="stand-in runner: execute the provisioning plan over ssh (lab)")
    run.add_argument("--stack", required=True)
    args = parser.parse_args(argv)
    try:
        config = load_stack_config(args.stack)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "render":
        written = render_tree(config, ClusterSecrets.placeholders(), args.out)
        print(f"rendered {len(written)} files for {len(config.nodes)} nodes into {args.out}")
        return 0
    secrets = load_or_create_secrets(LAB_DIR / "secrets.json", f"postgres@{config.cluster_name}")
    return apply(config, secrets)


if __name__ == "__main__":
    sys.exit(main())
