"""A signed flat apt repository holding the NEWEST PostgreSQL packages the host's apt offers, served to the lab's
servers from the lab's client address: what an air-gapped site's package mirror is, so that the product's package
upgrade (postgresql.packageVersion with packageMirror) runs for real on servers whose image holds the oldest version
(lab/image.py). Built in the host namespaces (apt-get download needs the host's network); served inside the lab's
switch namespace only, on 10.213.8.2, for as long as a test needs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import CLIENT_ADDR, lab_dir
from .image import UPGRADABLE_PACKAGES, package_versions
from .util import LabError, log, run, wait_for

PORT = 8081
KEY_NAME = "pgha lab mirror"


@dataclass(frozen=True)
class Mirror:
    directory: Path  # the repository (served)
    versions: dict[str, str]  # package -> version it holds
    public_key: str  # ASCII-armored

    @property
    def url(self) -> str:
        return f"http://{CLIENT_ADDR}:{PORT}/"

    def stack_config(self) -> dict[str, str]:
        """The stack's packageMirror entry for this repository."""
        return {"url": self.url, "suite": "./", "publicKey": self.public_key}


def _paths(base: Path) -> tuple[Path, Path, Path]:
    root = base / "mirror"
    return root / "repo", root / "gnupg", root / "mirror.json"


def build(base: Path | None = None) -> Mirror:
    """Download the newest versions of the upgradable packages and sign a flat repository (idempotent)."""
    repo, gnupg, stamp = _paths(base or lab_dir())
    newest = {}
    for package in UPGRADABLE_PACKAGES:
        versions = package_versions(package)
        if len(versions) < 2:
            raise LabError(f"the host's apt offers one version of {package} ({versions}): no upgrade to show")
        newest[package] = versions[0]
    if stamp.is_file() and json.loads(stamp.read_text()) == newest and (repo / "InRelease").is_file():
        return load(base)
    t0 = time.monotonic()
    shutil.rmtree(repo.parent, ignore_errors=True)
    repo.mkdir(parents=True)
    gnupg.mkdir(mode=0o700)
    specs = [f"{p}={v}" for p, v in newest.items()]
    run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *specs], cwd=repo, timeout=600)
    (repo / "Packages").write_text(run(["apt-ftparchive", "packages", "."], cwd=repo).stdout)
    (repo / "Release").write_text(run(["apt-ftparchive", "release", "."], cwd=repo).stdout)
    gpg = ["gpg", "--batch", "--quiet", "--homedir", str(gnupg), "--pinentry-mode", "loopback", "--passphrase", ""]
    run([*gpg, "--quick-gen-key", KEY_NAME, "ed25519", "sign", "never"])
    run([*gpg, "--yes", "--local-user", KEY_NAME, "--clearsign", "--output", str(repo / "InRelease"),
         str(repo / "Release")])  # fmt: skip
    (repo / "key.asc").write_text(run([*gpg, "--armor", "--export", KEY_NAME]).stdout)
    run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"], check=False)  # gpg started one: no leftovers
    stamp.write_text(json.dumps(newest))
    log.info("mirror: %s signed in %.1f s (%s)", repo, time.monotonic() - t0, ", ".join(specs))
    return load(base)


def load(base: Path | None = None) -> Mirror:
    repo, _, stamp = _paths(base or lab_dir())
    if not stamp.is_file():
        raise LabError("no lab mirror built (python -m lab mirror)")
    return Mirror(repo, json.loads(stamp.read_text()), (repo / "key.asc").read_text())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # the lab's own address, inside its namespace
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def serving(mirror: Mirror, timeout: float = 1800) -> Iterator[Mirror]:
    """Serve the repository on the lab's client address (inside the lab namespace), stopped on exit or after
    timeout seconds, whichever comes first."""
    if not any(CLIENT_ADDR in line for line in run(["ip", "-4", "-o", "addr"]).stdout.splitlines()):
        raise LabError(f"{CLIENT_ADDR} is not here: serve the mirror from inside the lab namespace")
    server = subprocess.Popen(
        [
            "timeout",
            str(int(timeout)),
            sys.executable,
            "-m",
            "http.server",
            str(PORT),
            "--bind",
            CLIENT_ADDR,
            "--directory",
            str(mirror.directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        wait_for(f"the mirror on {mirror.url}", lambda: _answers(f"{mirror.url}InRelease") or None, 15)
        yield mirror
    finally:
        server.terminate()
        server.wait(10)
