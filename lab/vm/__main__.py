"""python -m lab.vm up | down [--purge] | status | provision | destroy | settle | test [-- PYTEST ARGS]

up         host packages, image + mirror (cached), namespace with libvirtd/virtlogd, storage pool, mirror server,
           then `pulumi up` of the vmlab stack inside the namespace (real engine, real libvirt provider)
provision  `pulumi up` only (must run inside the namespace: `up` does that itself)
destroy    `pulumi destroy` only (inside the namespace)
settle     `pulumi refresh`, then `pulumi preview --diff --expect-no-changes` (inside the namespace): what the real
           provider reads back from libvirt matches the program
down       destroy the stack, remove anything of the lab left in libvirt, stop the mirror server and the daemons,
           delete the namespace, drop the stack's state; --purge also deletes the image and mirror cache
status     what runs
test       a fresh lab, pytest with the VM back-end inside the namespace (the args after --), then down
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from ..engine import EngineError
from ..util import LabError, log
from .lifecycle import destroy, down, provision, run_tests, settle, setup_host, status, up


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.vm", description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=["up", "down", "status", "provision", "destroy", "settle", "host", "test"])
    parser.add_argument("--purge", action="store_true", help="down: also delete the cached image and mirror")
    words = list(sys.argv[1:] if argv is None else argv)
    # test: everything after -- is pytest's
    pytest_args = words[words.index("--") + 1 :] if "--" in words else []
    args = parser.parse_args(words[: words.index("--")] if "--" in words else words)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if os.geteuid() != 0:
        print("python -m lab.vm: run as root", file=sys.stderr)
        return 2
    try:
        match args.verb:
            case "up":
                print(json.dumps(up()))
            case "host":
                print(json.dumps(setup_host()))
            case "provision":
                provision()
            case "destroy":
                destroy()
            case "settle":
                print(json.dumps(settle()))
            case "down":
                down(args.purge)
            case "test":
                return run_tests(pytest_args)
            case "status":
                print(json.dumps(status(), indent=2))
    except (LabError, EngineError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
