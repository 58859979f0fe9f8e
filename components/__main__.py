"""`python -m components render --stack S --out DIR`: every node's files, for review, without Pulumi.
`python -m components shellcheck --stack S [--stack S2 ...]`: every rendered step program and server script of the
stacks shellchecked (make lint).

Servers are provisioned by the Pulumi engine only (`pulumi up`; the lab: `python -m lab.engine up`)."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .render import render_tree
from .secrets import ClusterSecrets
from .shellcheck import shellcheck
from .stack import load_stack_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write every node's files to DIR/<node>/<server path> (placeholders)")
    render.add_argument("--stack", required=True)
    render.add_argument("--out", required=True)
    check = sub.add_parser("shellcheck", help="shellcheck every rendered step program and server script")
    check.add_argument("--stack", required=True, action="append", help="a stack name; repeat for more")
    args = parser.parse_args(argv)
    stacks = args.stack if args.command == "shellcheck" else [args.stack]
    try:
        configs = {stack: load_stack_config(stack) for stack in stacks}
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "shellcheck":
        failed = sum(shellcheck(config, stack) for stack, config in configs.items())
        return 1 if failed else 0
    config = configs[args.stack]
    written = render_tree(config, ClusterSecrets.placeholders(), args.out)
    print(f"rendered {len(written)} files for {len(config.all_hosts)} hosts into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
