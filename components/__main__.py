"""`python -m components render --stack S --out DIR`: every node's files, for review, without Pulumi.

Servers are provisioned by the Pulumi engine only (`pulumi up`; the lab: `python -m lab.engine up`)."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .render import render_tree
from .secrets import ClusterSecrets
from .stack import load_stack_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write every node's files to DIR/<node>/<server path> (placeholders)")
    render.add_argument("--stack", required=True)
    render.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        config = load_stack_config(args.stack)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    written = render_tree(config, ClusterSecrets.placeholders(), args.out)
    print(f"rendered {len(written)} files for {len(config.all_hosts)} hosts into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
