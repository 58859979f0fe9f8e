#!/usr/bin/env python3
"""Write components/data/pgpool-contexts.json: when each pgpool-II parameter takes effect, per pgpool-II release.

Which settings a reload (SIGHUP) applies decides whether a pgpool.conf change reloads pgpool or restarts it
(components/services.py), so it comes from pgpool-II's own source, not from its docs: every entry of the
configuration tables in src/config/pool_config_variables.c names the parameter and its context.

    CFGCXT_BOOT, CFGCXT_INIT   read at start only: a change needs a restart
    CFGCXT_RELOAD              applied by a reload
    CFGCXT_SESSION             applied by a reload (and settable per session with PGPOOL SET)
    CFGCXT_PCP                 applied by a reload (and settable through PCP)

The release read for each major.minor is the one a supported distribution ships where there is one (Debian 12:
4.3.5, Debian 13: 4.6.1), else the newest tag of that series. Usage, with pgpool-II's git repository
(https://git.postgresql.org/git/pgpool2.git or its GitHub mirror pgpool/pgpool2) cloned anywhere:

    .venv/bin/python scripts/pgpool_contexts_data.py --repo /path/to/pgpool2

then commit the JSON file.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "components" / "data" / "pgpool-contexts.json"
SOURCE = "src/config/pool_config_variables.c"
# major.minor -> the release read (a tag of pgpool-II's repository).
RELEASES = {
    "4.3": "V4_3_5",  # Debian 12 (bookworm)
    "4.4": "V4_4_17",
    "4.5": "V4_5_12",
    "4.6": "V4_6_1",  # Debian 13 (trixie)
    "4.7": "V4_7_2",  # PGDG
}
# `{ {"name", CFGCXT_X, GROUP, ...` opens each entry of every configuration table.
ENTRY = re.compile(r'\{\s*\{\s*"([A-Za-z_0-9]+)"\s*,\s*(CFGCXT_[A-Z]+)\s*,')


def contexts(source: str) -> dict[str, str]:
    """Parameter -> context name (BOOT, INIT, RELOAD, SESSION, PCP) from pool_config_variables.c's text. Names in
    lower case: pgpool matches them without regard to case (4.3's delegate_IP is 4.4's delegate_ip)."""
    found = {name.lower(): context.removeprefix("CFGCXT_") for name, context in ENTRY.findall(source)}
    if len(found) < 100:
        raise SystemExit(f"only {len(found)} parameters found: is this pgpool-II's {SOURCE}?")
    return dict(sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="a clone of pgpool-II's git repository")
    args = parser.parse_args()
    data: dict[str, object] = {"source": SOURCE, "releases": RELEASES, "contexts": {}}
    for series, tag in RELEASES.items():
        text = subprocess.run(
            ["git", "-C", str(args.repo), "show", f"{tag}:{SOURCE}"], check=True, capture_output=True, text=True
        ).stdout
        data["contexts"][series] = contexts(text)  # type: ignore[index]
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({', '.join(f'{s}: {t}' for s, t in RELEASES.items())})")


if __name__ == "__main__":
    main()
