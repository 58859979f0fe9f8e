"""The Pulumi engine, driven for a lab: the same `pulumi preview/up/refresh/destroy` a user runs, offline.

State: a file backend and the passphrase secrets provider under $LAB_DIR/pulumi (passphrase generated once, 0600).
The stack's config is the repo's Pulumi.<source>.yaml, copied to $LAB_DIR/pulumi/Pulumi.<stack>.yaml and passed
with --config-file: the passphrase provider writes its encryption salt into the config file, and a salt that
belongs to one machine's lab must not land in the repo. The copy is rewritten from the repo file before every
command (plus the salt, plus any overrides a test asks for), so editing Pulumi.lab.yaml is what changes the lab.

The stack state lives and dies with the servers it describes (remote commands cannot notice a rebuilt server):
`forget()` drops it when the lab makes fresh servers.

Commands that reach the servers (up, refresh, destroy) must run inside the lab's namespace: call this from a
process that is already there (`ip netns exec pghalab-sw ...`, as the Makefile does).

    python -m lab.engine up|preview|refresh|destroy|outputs|forget [--config STACKFILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from .config import lab_dir

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools"
PROJECT = "pgpool-ha"
# Everything the engine needs is already here: never ask a service, never download a plugin.
OFFLINE_ENV = {
    "PULUMI_SKIP_UPDATE_CHECK": "1",
    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
}
# One line of the `Resources:` summary: "    + 3 created", "    ~ 6 to update", "    +-1 replaced", "    111 unchanged".
SUMMARY_LINE = re.compile(
    r"\s+([+~\-]+\s*)?(\d+) (to )?(created|create|updated|update|deleted|delete|replaced|replace|unchanged)\b"
)
# After the counted lines, when something changed: "    18 changes. 102 unchanged".
UNCHANGED_TAIL = re.compile(r"^\s+\d+ changes?\. (\d+) unchanged")
# `up`/`destroy` of the lab is about a minute; a hang (a command waiting on a dead server) must still end.
DEFAULT_TIMEOUT = 900.0


class EngineError(RuntimeError):
    """A pulumi command failed; the message holds the tail of its output."""


@dataclass
class EngineRun:
    argv: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def changes(self) -> dict[str, int]:
        """The `Resources:` summary of up/destroy/preview: {'created': 3, 'unchanged': 117, ...}."""
        counts: dict[str, int] = {}
        in_summary = False
        for line in self.output.splitlines():
            if line.strip() == "Resources:":
                in_summary = True
                continue
            if in_summary:
                m = SUMMARY_LINE.match(line)
                if m:
                    counts[m.group(4)] = counts.get(m.group(4), 0) + int(m.group(2))
                elif (tail := UNCHANGED_TAIL.search(line)) is not None:
                    counts["unchanged"] = counts.get("unchanged", 0) + int(tail.group(1))
                elif line.strip():
                    in_summary = False
        return counts


@dataclass
class Engine:
    """Where the pulumi CLI and its plugins are: .tools (scripts/build-engine.sh) or a workstation's own."""

    pulumi: Path
    home: Path

    @classmethod
    def locate(cls) -> Engine:
        marker, marker_home = TOOLS / "system-pulumi", TOOLS / "system-pulumi-home"
        if marker.is_file() and marker_home.is_file():
            return cls(Path(marker.read_text().strip()), Path(marker_home.read_text().strip()))
        built = TOOLS / "bin" / "pulumi"
        if not built.is_file():
            raise EngineError(f"no pulumi CLI at {built}: run `make engine` (scripts/build-engine.sh) first")
        return cls(built, TOOLS / "pulumi-home")


@dataclass
class LabStack:
    """One Pulumi stack of this project whose state and secrets live under a lab's directory."""

    stack: str = "lab"
    directory: Path = field(default_factory=lambda: lab_dir() / "pulumi")
    echo: bool = True  # stream the engine's output to stdout as it comes

    # ------------------------------------------------------------------ files
    @property
    def backend(self) -> Path:
        return self.directory / "backend"

    @property
    def passphrase_file(self) -> Path:
        return self.directory / "passphrase"

    @property
    def config_file(self) -> Path:
        return self.directory / f"Pulumi.{self.stack}.yaml"

    def _ensure_passphrase(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if self.passphrase_file.exists():
            if self.passphrase_file.stat().st_mode & 0o077:
                raise EngineError(f"{self.passphrase_file} is readable by others: chmod 600 it")
            return
        fd = os.open(self.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")

    def env(self) -> dict[str, str]:
        engine = Engine.locate()
        env = {
            **os.environ,
            **OFFLINE_ENV,
            "PATH": f"{engine.pulumi.parent}:{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PULUMI_HOME": str(engine.home),
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(self.passphrase_file),
            "NO_COLOR": "1",
        }
        env.pop("PULUMI_CONFIG_PASSPHRASE", None)  # the file is the one source
        return env

    def write_config(
        self, source: str | None = None, overrides: Mapping[str, Any] | None = None, *, salt: str | None = None
    ) -> Path:
        """Pulumi.<stack>.yaml for the engine: the repo's Pulumi.<source>.yaml (default: this stack's), with
        `overrides` merged into its keys (bare names, nested dicts merged), and the salt of the state's secrets."""
        document = yaml.safe_load((REPO / f"Pulumi.{source or self.stack}.yaml").read_text()) or {}
        values: dict[str, Any] = dict(document.get("config") or {})
        for key, value in (overrides or {}).items():
            full = f"{PROJECT}:{key}"
            values[full] = _merged(values.get(full), value)
        salt = salt or self._salt()
        out: dict[str, Any] = {}
        if salt:
            out["encryptionsalt"] = salt
        out["config"] = values
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(out, sort_keys=False))
        tmp.replace(self.config_file)
        return self.config_file

    def encrypt(self, key: str, value: str) -> dict[str, str]:
        """`{"secure": ciphertext}` of `value` for config key `key` (bare name), encrypted by the engine with this
        stack's passphrase: an override that keeps a secret a secret. `pulumi config set --secret` reads the value on
        stdin (never argv); the ciphertext is taken from the copy of the stack file, which ensure() rewrites anyway."""
        self.ensure()
        proc = subprocess.run(
            [str(Engine.locate().pulumi), "config", "set", "--secret", key, *self._stack_args()],
            input=value,
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise EngineError(f"pulumi config set --secret {key} failed: {proc.stderr.strip()[-2000:]}")
        document = yaml.safe_load(self.config_file.read_text()) or {}
        secure = (document.get("config") or {}).get(f"{PROJECT}:{key}")
        if not (isinstance(secure, dict) and isinstance(secure.get("secure"), str)):
            raise EngineError(f"no encrypted {key} in {self.config_file} after `pulumi config set --secret`")
        return {"secure": secure["secure"]}

    def _salt(self) -> str | None:
        if not self.config_file.exists():
            return None
        document = yaml.safe_load(self.config_file.read_text()) or {}
        salt = document.get("encryptionsalt")
        return str(salt) if salt else None

    # ------------------------------------------------------------------ the CLI
    def run(
        self,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        echo: bool | None = None,
        on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    ) -> EngineRun:
        """pulumi ARGS in the project directory; output streamed (echo) and kept. on_start gets the process (its
        own process group: kill_group() ends the CLI and its plugins, as a closed terminal or an OOM kill would)."""
        argv = [str(Engine.locate().pulumi), *args]
        echo = self.echo if echo is None else echo
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a kill reaches the plugins too
        )
        lines: list[str] = []
        killed = threading.Event()

        def watchdog() -> None:
            if _wait(proc, timeout):
                return
            killed.set()
            kill_group(proc)

        threading.Thread(target=watchdog, daemon=True).start()
        if on_start is not None:
            on_start(proc)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                _write(sys.stdout, line)
        rc = proc.wait()
        result = EngineRun(argv, rc, "".join(lines), time.monotonic() - t0)
        if killed.is_set():
            raise EngineError(f"pulumi {' '.join(args)}: no end after {timeout:.0f} s, killed")
        if check and rc != 0:
            raise EngineError(f"pulumi {' '.join(args)} failed (rc {rc}):\n{result.output[-4000:]}")
        return result

    def _stack_args(self) -> list[str]:
        return ["--stack", self.stack, "--config-file", str(self.config_file), "--non-interactive"]

    def ensure(self, source: str | None = None, overrides: Mapping[str, Any] | None = None) -> None:
        """Passphrase, backend, stack (created with the passphrase provider if new), config copy."""
        self._ensure_passphrase()
        self.backend.mkdir(parents=True, exist_ok=True)
        self.write_config(source, overrides)
        if not self.exists():
            # `stack init` writes the new salt into Pulumi.<stack>.yaml beside Pulumi.yaml and has no --config-file:
            # let it write into a scratch copy of the project, never into the repo.
            scratch = self.directory / "init"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            shutil.copy(REPO / "Pulumi.yaml", scratch / "Pulumi.yaml")
            self.run(
                "stack",
                "init",
                self.stack,
                "--secrets-provider",
                "passphrase",
                "--non-interactive",
                "--cwd",
                str(scratch),
                echo=False,
            )
            salt = (yaml.safe_load((scratch / f"Pulumi.{self.stack}.yaml").read_text()) or {}).get("encryptionsalt")
            if not salt:
                raise EngineError(f"pulumi stack init wrote no encryption salt into {scratch}")
            shutil.rmtree(scratch)
            self.write_config(source, overrides, salt=str(salt))

    def exists(self) -> bool:
        if not self.backend.exists():
            return False
        listed = self.run("stack", "ls", "--json", echo=False, check=False)
        if listed.returncode != 0:
            return False
        return any(s.get("name") == self.stack for s in json.loads(listed.output or "[]"))

    def up(self, source: str | None = None, overrides: Mapping[str, Any] | None = None, **kw: Any) -> EngineRun:
        self.ensure(source, overrides)
        return self.run("up", "--yes", "--skip-preview", "--diff", *self._stack_args(), **kw)

    def preview(
        self,
        source: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        expect_no_changes: bool = False,
        **kw: Any,
    ) -> EngineRun:
        self.ensure(source, overrides)
        extra = ["--expect-no-changes"] if expect_no_changes else []
        return self.run("preview", "--diff", *extra, *self._stack_args(), **kw)

    def plan(self, source: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
        """What `preview` would do, per resource name: {'server1-pgpool-service': 'update', ...} (no 'same')."""
        self.ensure(source, overrides)
        run = self.run("preview", "--json", *self._stack_args(), echo=False)
        steps = json.loads(run.output[run.output.index("{") :]).get("steps") or []
        return {step["urn"].rsplit("::", 1)[1]: step["op"] for step in steps if step.get("op") != "same"}

    def refresh(self, **kw: Any) -> EngineRun:
        self.ensure()
        return self.run("refresh", "--yes", "--skip-preview", *self._stack_args(), **kw)

    def cancel(self, **kw: Any) -> EngineRun:
        """Remove the lock a killed CLI left on the stack (only when no other pulumi runs on it)."""
        return self.run("cancel", "--yes", "--stack", self.stack, **kw)

    def drop_torn_state_metadata(self) -> list[Path]:
        """A CLI killed while the file backend saved the state can leave `<stack>.json.attrs` empty (its metadata
        sidecar, written beside the complete previous state file): every command then fails with "failed to load
        checkpoint: EOF". Deleting the empty sidecar is the README's first recovery step; returns what it deleted."""
        stacks = self.backend / ".pulumi" / "stacks"
        torn = [p for p in stacks.rglob("*.attrs") if p.stat().st_size == 0] if stacks.is_dir() else []
        for path in torn:
            path.unlink()
        return torn

    def refresh_clearing_pending_creates(self, **kw: Any) -> EngineRun:
        """After an interrupted `up` and the `up` that re-ran its steps: drop the stale pending-create records."""
        self.ensure()
        return self.run("refresh", "--yes", "--skip-preview", "--clear-pending-creates", *self._stack_args(), **kw)

    def destroy(self, **kw: Any) -> EngineRun:
        self.ensure()
        return self.run("destroy", "--yes", "--skip-preview", *self._stack_args(), **kw)

    def outputs(self, *, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "output", "--json", "--stack", self.stack]
        if show_secrets:
            args.append("--show-secrets")
        return dict(json.loads(self.run(*args, echo=False).output))

    def export(self, *, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "export", "--stack", self.stack]
        if show_secrets:
            args.append("--show-secrets")
        return dict(json.loads(self.run(*args, echo=False).output))

    def resource_count(self) -> int:
        """Resources in the state (the stack itself included), 0 when there is no stack."""
        if not self.exists():
            return 0
        return len(self.export().get("deployment", {}).get("resources") or [])

    def resources_in_checkpoint(self) -> int | None:
        """Resources the file backend has saved so far (it saves after every step); None while unreadable. Reads
        the file directly: usable while an `up` runs."""
        path = self.backend / ".pulumi" / "stacks" / PROJECT / f"{self.stack}.json"
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return len((document.get("checkpoint") or {}).get("latest", {}).get("resources") or [])

    def forget(self) -> None:
        """Drop the stack's state (the servers it described are gone). The passphrase stays."""
        shutil.rmtree(self.backend, ignore_errors=True)
        self.config_file.unlink(missing_ok=True)


def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _wait(proc: subprocess.Popen[str], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _write(stream: TextIO, line: str) -> None:
    stream.write(line)
    stream.flush()


def _merged(base: Any, change: Any) -> Any:
    if isinstance(base, dict) and isinstance(change, Mapping):
        out = copy.deepcopy(base)
        for key, value in change.items():
            out[key] = _merged(out.get(key), value)
        return out
    return copy.deepcopy(change)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=["up", "preview", "refresh", "destroy", "outputs", "forget"])
    parser.add_argument("--stack", default="lab", help="the stack's name (default lab)")
    parser.add_argument("--config", default=None, help="repo stack file to take the config from (default: --stack)")
    args = parser.parse_args(argv)
    stack = LabStack(args.stack)
    try:
        match args.verb:
            case "up":
                r = stack.up(args.config)
                print(f"engine: up in {r.seconds:.1f} s: {r.changes}")
            case "preview":
                stack.preview(args.config)
            case "refresh":
                stack.refresh()
            case "destroy":
                stack.destroy()
            case "outputs":
                print(json.dumps(stack.outputs(), indent=2))
            case "forget":
                stack.forget()
    except EngineError as e:
        print(f"engine: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
