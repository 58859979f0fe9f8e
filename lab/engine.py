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

    python -m lab.engine up|preview|refresh|destroy|outputs|forget [--config STACKFILE] [--progress]

--progress (what `make demo` uses): the terminal gets progress lines, the errors and the summary; the full engine
output, diff included, goes to a log file under $LAB_DIR/pulumi/logs whose path is printed.
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

# What the progress filter recognises in the output of preview/up/refresh/destroy. The diff display (`--diff`, what
# up and preview run here) prints each step as it starts: "  + command:remote:Command: (create)", then its
# "[urn=urn:pulumi:lab::pgpool-ha::...::server1-packages]", then the properties. The progress display prints one
# line per state change: "+  command:remote:Command server1-packages created (3s)", and a Diagnostics section whose
# entries start "  command:remote:Command (server1-packages):".
DIFF_STEP = re.compile(r"^\s*[-+~<>=*]*\s*(?P<type>[\w-]+:[\w/.-]*:[\w-]+): \((?P<op>[a-z-]+)\)")
URN_LINE = re.compile(r"^\s*\[urn=urn:pulumi:[^\]]*::(?P<name>[^:\]]+)\]\s*$")
PROGRESS_STEP = re.compile(
    r"^\s*(?:[-+~<>=*]{1,2}\s+)?(?P<type>[\w-]+:[\w/.-]*:[\w-]+) (?P<name>\S+) "
    r"(?P<status>\*\*[a-z ]+\*\*|[a-z]+(?: (?:replacement|original))?)(?: \(\d+s\))?(?P<rest>.*)$"
)
DIAG_ENTRY = re.compile(r"^\s+(?P<type>[\w-]+:[\w/.-]*:[\w-]+) \((?P<name>[^)]+)\):\s*$")
# Column 0 in the diff display; indented under its entry in a Diagnostics section.
DIAG_MESSAGE = re.compile(r"^(?P<indent>\s*)(?P<severity>error|warning): (?P<message>.*)$")
SECTION = re.compile(
    r"^(Resources|Outputs|Duration|Diagnostics|Configuration|Previewing|Updating|Destroying|Refreshing)"
)
STEP_OPS = {"create", "update", "delete", "replace", "create-replacement", "delete-replaced", "read", "import"}
DONE_STATUSES = {"created", "updated", "deleted", "replaced", "read", "imported", "refreshed"}
# The engine's closing line for a failed operation: the lines before it say what failed.
GENERIC_FAILURES = re.compile(r"^(update|preview|destroy|refresh) failed$")
# A failing step's message holds its command's whole output: the terminal gets its head, the log all of it.
ERROR_LINES_SHOWN = 40
# The verbs whose output --progress condenses (the others are short and read by the code).
OPERATIONS = {"preview", "up", "refresh", "destroy"}


@dataclass
class ProgressFilter:
    """Turns the engine's output, line by line, into what a newcomer watches: a progress line every `every` steps
    (and after `quiet_seconds` without one), each error with the failing resource when the engine names it, and
    the `Resources:` summary. `feed` and `tick` return the lines to print; `now` is time.monotonic()."""

    verb: str
    started_at: float
    every: int = 25
    quiet_seconds: float = 30.0
    steps: dict[str, int] = field(default_factory=dict)  # op -> steps started
    done: int = 0  # steps finished (only the progress display says so)
    warnings: int = 0
    failed: list[str] = field(default_factory=list)  # resources the engine names as failed
    summary: list[str] = field(default_factory=list)
    last_step: str = ""
    _pending_op: str = ""
    _seen: set[str] = field(default_factory=set)  # "op name": the progress display repeats a step's line
    _entry: str = ""  # the Diagnostics entry being read: "type (name)"
    _error_lines: int = -1  # lines of the current error block shown so far; -1: not in one
    _error_hidden: int = 0
    _in_summary: bool = False
    _last_report: float = 0.0
    _reported_at_steps: int = 0

    @property
    def started(self) -> int:
        return sum(self.steps.values())

    def feed(self, line: str, now: float) -> list[str]:
        line = line.rstrip("\n")
        out: list[str] = []
        if (step := DIFF_STEP.match(line)) and step.group("op") in STEP_OPS | {"same"}:
            out += self._end_error()
            self._pending_op = step.group("op") if step.group("type") != "pulumi:pulumi:Stack" else ""
        elif (urn := URN_LINE.match(line)) and self._pending_op:
            if self._pending_op in STEP_OPS:
                self._count(self._pending_op, urn.group("name"))
            self._pending_op = ""
            out += self._maybe_report(now)
        elif (entry := DIAG_ENTRY.match(line)) is not None:
            out += self._end_error()
            self._entry = f"{entry.group('type')} ({entry.group('name')})"
        elif (message := DIAG_MESSAGE.match(line)) is not None and (not message.group("indent") or self._entry):
            out += self._end_error()
            out += self._diagnostic(message.group("severity"), message.group("message"))
        elif (progress := PROGRESS_STEP.match(line)) is not None and self._progress_line(progress):
            out += self._end_error()
            out += self._maybe_report(now)
        elif line.startswith("Resources:"):
            out += self._end_error()
            self._in_summary = True
            self.summary.append(line)
        elif self._in_summary:
            if line.strip():
                self.summary.append(line)
            self._in_summary = not line.startswith("Duration:")
        elif SECTION.match(line) or line.startswith("@ ") or "--outputs:--" in line:
            out += self._end_error()
        elif self._error_lines >= 0:
            out += self._error_line(line)
        return out

    def tick(self, now: float) -> list[str]:
        """A line when the engine has been quiet for a while: a long step is visible as one."""
        if self._error_lines >= 0 or now - max(self._last_report, self.started_at) < self.quiet_seconds:
            return []
        return [self._report(now, still=True)]

    def finish(self, returncode: int, now: float, log: Path | None) -> list[str]:
        out = self._end_error()
        seconds = now - self.started_at
        if returncode == 0:
            out.append(f"engine: {self.verb} done in {seconds:.0f} s: {self._counts(final=True)}")
        else:
            failed = f"; failed: {', '.join(self.failed)}" if self.failed else ""
            counts = self._counts(final=True) if self.started or self.done else "before any step"
            out.append(f"engine: {self.verb} FAILED (rc {returncode}) after {seconds:.0f} s: {counts}{failed}")
        out += self.summary
        if self.warnings:
            out.append(f"engine: {self.warnings} warning(s), in the log")
        if log is not None:
            out.append(f"engine: full engine output (diff included): {log}")
        return out

    # ---------------------------------------------------------------- helpers
    def _count(self, op: str, name: str) -> None:
        if f"{op} {name}" in self._seen:
            return
        self._seen.add(f"{op} {name}")
        self.steps[op] = self.steps.get(op, 0) + 1
        self.last_step = name

    def _progress_line(self, match: re.Match[str]) -> bool:
        """A progress-display line: counts a start or an end; a failure is remembered. False: not one."""
        if match.group("type") == "pulumi:pulumi:Stack":
            return match.group("status") in {"running", "creating", "created", "updating", "updated"}
        status, name = match.group("status"), match.group("name")
        if status.startswith("**") and "failed" in status:
            if name not in self.failed:
                self.failed.append(name)
            return True
        if status in DONE_STATUSES or status in {"created replacement", "deleted original"}:
            if f"{status} {name}" not in self._seen:
                self._seen.add(f"{status} {name}")
                self.done += 1
            return True
        op = {"creating": "create", "updating": "update", "deleting": "delete", "replacing": "replace",
              "creating replacement": "create-replacement", "deleting original": "delete-replaced",
              "reading": "read", "importing": "import", "refreshing": "refresh"}.get(status)  # fmt: skip
        if op is None:
            return False
        self._count(op, name)
        return True

    def _diagnostic(self, severity: str, message: str) -> list[str]:
        entry, self._entry = self._entry, ""
        if severity == "warning":
            self.warnings += 1
            return []
        if GENERIC_FAILURES.match(message.strip()):
            return []
        if entry and not entry.startswith("pulumi:pulumi:Stack"):
            name = entry.split(" (", 1)[1].rstrip(")")
            if name not in self.failed:
                self.failed.append(name)
        self._error_lines, self._error_hidden = 0, 0
        where = f" {entry}" if entry else ""
        return [f"engine: ERROR{where}:", *self._error_line(f"    error: {message}")]

    def _error_line(self, line: str) -> list[str]:
        if self._error_lines >= ERROR_LINES_SHOWN:
            self._error_hidden += 1
            return []
        self._error_lines += 1
        return [line if line.startswith("    ") or not line else "    " + line]  # indented under its heading

    def _end_error(self) -> list[str]:
        hidden, self._error_hidden, self._error_lines = self._error_hidden, 0, -1
        return [f"    ... {hidden} more line(s) of this error in the log"] if hidden else []

    def _maybe_report(self, now: float) -> list[str]:
        total = self.started + self.done
        if total - self._reported_at_steps < self.every:
            return []
        self._reported_at_steps = total
        return [self._report(now)]

    def _report(self, now: float, still: bool = False) -> str:
        self._last_report = now
        what = "still working" if still else "progress"
        last = f"; last started: {self.last_step}" if self.last_step else ""
        return f"engine: {self.verb} {what} at {now - self.started_at:.0f} s: {self._counts()}{last}"

    def _counts(self, final: bool = False) -> str:
        if not self.started and not self.done:
            return "no steps (nothing to change)" if final else "no steps yet"
        kinds = ", ".join(f"{count} {op}" for op, count in sorted(self.steps.items()))
        done = f", {self.done} done" if self.done else ""
        started = "steps" if final else "steps started"
        return f"{self.started} {started} ({kinds}){done}" if self.started else f"{self.done} steps done"


class EngineError(RuntimeError):
    """A pulumi command failed; the message holds the tail of its output."""


@dataclass
class EngineRun:
    argv: list[str]
    returncode: int
    output: str
    seconds: float
    log: Path | None = None  # where the full output was written (LabStack(progress=True))

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
    # preview/up/refresh/destroy: print progress lines, the errors and the summary (ProgressFilter), and write the
    # full output to a log file under logs/ whose path is printed. Independent of echo; the output is kept either way.
    progress: bool = False

    # ------------------------------------------------------------------ files
    @property
    def backend(self) -> Path:
        return self.directory / "backend"

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

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
        # --json output is read by code, not by a person: never condensed.
        watched = self.progress and bool(args) and args[0] in OPERATIONS and "--json" not in args
        watch = _Watch.start(self, args[0], t0) if watched else None

        def watchdog() -> None:
            if _wait(proc, timeout):
                return
            killed.set()
            kill_group(proc)

        threading.Thread(target=watchdog, daemon=True).start()
        if on_start is not None:
            on_start(proc)
        assert proc.stdout is not None
        try:
            if watch is not None:
                watch.heartbeat(proc)
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    _write(sys.stdout, line)
                if watch is not None:
                    watch.feed(line)
            rc = proc.wait()
        finally:
            if watch is not None:
                watch.close(proc.poll())
        result = EngineRun(argv, rc, "".join(lines), time.monotonic() - t0, watch.log if watch else None)
        if killed.is_set():
            raise EngineError(f"pulumi {' '.join(args)}: no end after {timeout:.0f} s, killed")
        if check and rc != 0:
            if watch is not None:  # the errors are on the terminal already, the rest is in the log
                raise EngineError(f"pulumi {args[0]} failed (rc {rc}); full output: {watch.log}")
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

    def up(
        self,
        source: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        refresh: bool = False,
        **kw: Any,
    ) -> EngineRun:
        """`up`; with refresh, `up --refresh` (the servers' drift read first, then repaired)."""
        self.ensure(source, overrides)
        extra = ["--refresh"] if refresh else []
        return self.run("up", "--yes", "--skip-preview", "--diff", *extra, *self._stack_args(), **kw)

    def preview(
        self,
        source: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        expect_no_changes: bool = False,
        refresh: bool = False,
        **kw: Any,
    ) -> EngineRun:
        self.ensure(source, overrides)
        extra = ["--expect-no-changes"] if expect_no_changes else []
        extra += ["--refresh"] if refresh else []
        return self.run("preview", "--diff", *extra, *self._stack_args(), **kw)

    def plan(
        self, source: str | None = None, overrides: Mapping[str, Any] | None = None, *, refresh: bool = False
    ) -> dict[str, str]:
        """What `preview` would do, per resource name: {'server1-pgpool-service': 'update', ...} (no 'same'; with
        refresh, the refresh's own reads left out)."""
        self.ensure(source, overrides)
        extra = ["--refresh"] if refresh else []
        run = self.run("preview", "--json", *extra, *self._stack_args(), echo=False)
        steps = json.loads(run.output[run.output.index("{") :]).get("steps") or []
        return {
            step["urn"].rsplit("::", 1)[1]: step["op"] for step in steps if step.get("op") not in ("same", "refresh")
        }

    def refresh(self, **kw: Any) -> EngineRun:
        self.ensure()
        return self.run("refresh", "--yes", "--skip-preview", *self._stack_args(), **kw)

    def cancel(self, **kw: Any) -> EngineRun:
        """Remove the lock a killed CLI left on the stack (only when no other pulumi runs on it)."""
        return self.run("cancel", "--yes", "--stack", self.stack, **kw)

    def drop_torn_state_metadata(self) -> list[Path]:
        """A CLI killed while the file backend saved the state can leave `<stack>.json.attrs` empty (its metadata
        sidecar, written beside the complete previous state file): every command then fails with "failed to load
        checkpoint: EOF". Deleting the empty sidecar is the first recovery step of docs/failure-modes.md; returns
        what it deleted."""
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


def stacks_with_resources(directory: Path) -> list[str]:
    """The stacks of the file backend under `directory` whose last checkpoint holds resources. Reads the files
    directly (no engine, any namespace)."""
    found = []
    for path in sorted((directory / "backend" / ".pulumi" / "stacks" / PROJECT).glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            found.append(path.stem)  # unreadable: count it as holding something rather than reset a lab under it
            continue
        if (document.get("checkpoint") or {}).get("latest", {}).get("resources"):
            found.append(path.stem)
    return found


class _Watch:
    """One watched engine command: its log file, its ProgressFilter, and what the filter prints (one lock: the
    heartbeat thread and the output loop both print)."""

    def __init__(self, log: Path, handle: TextIO, progress: ProgressFilter) -> None:
        self.log, self.handle, self.progress = log, handle, progress
        self.lock = threading.Lock()
        self.closed = False  # after the final lines, a late heartbeat prints nothing

    @classmethod
    def start(cls, stack: LabStack, verb: str, t0: float) -> _Watch:
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        log = stack.log_dir / f"{verb}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"
        # The output shows secrets as [secret], but it is the state's business: readable by the owner only.
        handle = os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w")
        _write(sys.stdout, f"engine: pulumi {verb} of stack {stack.stack}; full output: {log}\n")
        return cls(log, handle, ProgressFilter(verb, t0))

    def feed(self, line: str) -> None:
        self.handle.write(line)
        self.handle.flush()
        with self.lock:
            self._print(self.progress.feed(line, time.monotonic()))

    def heartbeat(self, proc: subprocess.Popen[str], every: float = 5.0) -> None:
        def beat() -> None:
            while not _wait(proc, every):
                with self.lock:
                    if not self.closed:
                        self._print(self.progress.tick(time.monotonic()))

        threading.Thread(target=beat, daemon=True).start()

    def close(self, returncode: int | None) -> None:
        self.handle.close()
        with self.lock:
            self.closed = True
            self._print(self.progress.finish(-1 if returncode is None else returncode, time.monotonic(), self.log))

    @staticmethod
    def _print(lines: list[str]) -> None:
        for line in lines:
            _write(sys.stdout, line + "\n")


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
    parser.add_argument(
        "--progress", action="store_true", help="progress, errors and summary only; the full output to a log file"
    )
    parser.add_argument("--refresh", action="store_true", help="up/preview: read the servers' drift first")
    parser.add_argument("--expect-no-changes", action="store_true", help="preview: fail when anything would change")
    args = parser.parse_args(argv)
    stack = LabStack(args.stack, echo=not args.progress, progress=args.progress)
    try:
        match args.verb:
            case "up":
                r = stack.up(args.config, refresh=args.refresh)
                if args.progress:
                    _print_outputs(stack)
                else:
                    print(f"engine: up in {r.seconds:.1f} s: {r.changes}")
            case "preview":
                stack.preview(args.config, refresh=args.refresh, expect_no_changes=args.expect_no_changes)
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
    except KeyboardInterrupt:
        print("engine: interrupted (the stack may hold pending operations: see docs/failure-modes.md)")
        return 130
    return 0


def _print_outputs(stack: LabStack) -> None:
    """The stack's outputs, one a line: where the cluster answers (VIP, endpoints, URLs)."""
    try:
        outputs = stack.outputs()
    except EngineError as e:  # the up itself succeeded: say why there is no list, do not fail
        print(f"engine: no stack outputs: {e}")
        return
    for key, value in outputs.items():
        shown = value if isinstance(value, str | int | float) else json.dumps(value, separators=(", ", ": "))
        print(f"engine: output {key}: {shown}")


if __name__ == "__main__":
    sys.exit(main())
