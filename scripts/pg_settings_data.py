#!/usr/bin/env python3
"""Write components/data/postgresql-<major>-settings.json: what a real PostgreSQL says about each of its settings.

postgresql.parameters values are checked against this data (components/pg_settings.py), so it comes from the
server itself, not from the docs: a throw-away instance is created in a temporary directory (initdb), started on a
unix socket inside that directory only (listen_addresses '', no TCP), `pg_settings` is read (name, vartype, unit,
min_val, max_val, enumvals, context, and boot_val: the built-in default), the server is stopped and the directory
removed.

pg_settings lists an enum's visible values only; PostgreSQL also takes hidden aliases (e.g. huge_pages = yes). The
boolean spellings each enum takes are found by asking the binary (`postgres -C name -c name=value` parses the value
as the server would at start, for settings of any context) and recorded as `aliases`.

Usage (root drops to the `postgres` user for initdb and the server; any other user runs them itself):

    .venv/bin/python scripts/pg_settings_data.py            # PostgreSQL 15 from /usr/lib/postgresql/15/bin
    .venv/bin/python scripts/pg_settings_data.py 17         # another major: install postgresql-17 first, e.g. on
                                                             # Debian 13 (trixie) `apt-get install postgresql-17`,
                                                             # or from apt.postgresql.org (PGDG) on Debian 12

On a Debian 12 host, a Debian 13 chroot serves for PostgreSQL 17 (how postgresql-17-settings.json was made; the
script needs only python3 and the server, and writes beside itself, so copy it in as scripts/ with a components/data/):

    mmdebstrap --variant=apt --include=postgresql-17,python3,util-linux trixie ROOT
    mount -t proc proc ROOT/proc; mount --bind /dev ROOT/dev; mount -t tmpfs shm ROOT/dev/shm
    chroot ROOT python3 /opt/pgsd/scripts/pg_settings_data.py 17   # then umount the three, copy the JSON back

then commit the JSON file; the major version is the lookup key, nothing else needs changing.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "components" / "data"
BOOLEAN_SPELLINGS = ("on", "off", "true", "false", "yes", "no", "1", "0")
QUERY = """
SELECT json_agg(json_build_object(
    'name', name, 'vartype', vartype, 'unit', unit, 'min_val', min_val, 'max_val', max_val,
    'enumvals', enumvals, 'context', context, 'boot_val', boot_val) ORDER BY name)
FROM pg_settings
"""


def _as_user(command: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


def _run(command: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_user(command, user), text=True, capture_output=True, check=False, timeout=120)


def _number(text: str | None, vartype: str) -> int | float | None:
    if text is None:
        return None
    return int(text) if vartype == "integer" else float(text)


def generate(major: int) -> dict[str, object]:
    bin_dir = Path(f"/usr/lib/postgresql/{major}/bin")
    if not (bin_dir / "postgres").is_file():
        sys.exit(f"no {bin_dir}/postgres: install postgresql-{major} first (apt-get install postgresql-{major})")
    user = "postgres" if os.geteuid() == 0 else None
    work = Path(tempfile.mkdtemp(prefix=f"pg{major}-settings-"))
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(work, entry.pw_uid, entry.pw_gid)
        data, socket = work / "data", work
        initdb = _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], user)
        if initdb.returncode != 0:
            sys.exit(f"initdb failed:\n{initdb.stderr}")
        options = f"-c listen_addresses='' -c unix_socket_directories='{socket}'"
        start = _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(work / "log"), "start"], user
        )
        if start.returncode != 0:
            sys.exit(f"the server did not start:\n{start.stderr}{(work / 'log').read_text()}")
        try:
            query = _run(
                [str(bin_dir / "psql"), "-h", str(socket), "-U", "postgres", "-d", "postgres", "-XAtc", QUERY], user
            )
            if query.returncode != 0:
                sys.exit(f"reading pg_settings failed:\n{query.stderr}")
            rows = json.loads(query.stdout)
        finally:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user)
        settings: dict[str, dict[str, object]] = {}
        for row in rows:
            vartype = row["vartype"]
            entry_data: dict[str, object] = {"vartype": vartype, "context": row["context"]}
            if row["unit"]:
                entry_data["unit"] = row["unit"]
            if vartype in ("integer", "real"):
                entry_data["min"] = _number(row["min_val"], vartype)
                entry_data["max"] = _number(row["max_val"], vartype)
                entry_data["default"] = _number(row["boot_val"], vartype)
            if vartype == "enum":
                entry_data["enumvals"] = row["enumvals"]
                aliases = [
                    spelling
                    for spelling in BOOLEAN_SPELLINGS
                    if spelling not in row["enumvals"] and _accepts(bin_dir, data, row["name"], spelling, user)
                ]
                if aliases:
                    entry_data["aliases"] = aliases
            settings[row["name"]] = entry_data
        version = _run([str(bin_dir / "postgres"), "--version"], None).stdout.strip()
        return {"generated_from": version, "generator": "scripts/pg_settings_data.py", "settings": settings}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _accepts(bin_dir: Path, data: Path, name: str, value: str, user: str | None) -> bool:
    """Whether the server takes `value` for `name` at start (it parses -c options as it parses the config file)."""
    probe = _run([str(bin_dir / "postgres"), "-D", str(data), "-C", name, "-c", f"{name}={value}"], user)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("major", type=int, nargs="?", default=15, help="PostgreSQL major version (default 15)")
    major = parser.parse_args().major
    started = time.monotonic()
    document = generate(major)
    target = DATA_DIR / f"postgresql-{major}-settings.json"
    target.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    count = len(document["settings"])  # type: ignore[arg-type]
    print(f"{target}: {count} settings ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
