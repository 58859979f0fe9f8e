"""The shipped GitHub workflows run as users run them. No job needs what exists only on the offline build machine:
the sibling ../shared folder, scripts/build-engine.sh, or a make target that reaches either (read from the Makefile,
prerequisites followed). Every job that runs pulumi installs the CLI the usual way (pulumi/actions, pinned to the
CLI the offline build makes) and lets the engine acquire its plugins."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ENGINE_BUILD = "scripts/build-engine.sh"
# A script that builds from ../shared/third_party, and the form of its THIRD_PARTY override (another tree of the
# same upstream sources, e.g. a checkout of upstream's tag on a runner).
SHARED_SOURCES = "shared/third_party"
THIRD_PARTY_OVERRIDE = "THIRD_PARTY=${THIRD_PARTY:-"
PULUMI_ACTION = "pulumi/actions@"
# Shell commands that run the pulumi CLI, directly or through the lab's engine driver.
RUNS_PULUMI = re.compile(r"(^|[\s;&|(])(pulumi\s+[a-z]|\S*scripts/pulumi\.sh|-m\s+lab\.engine\b)")
MAKE_CALL = re.compile(r"(?:^|[\s;&|(])make((?:[ \t]+[^\s;&|)#]+)*)")
SCRIPT_CALL = re.compile(r"(?:^|[\s;&|(])(?:bash\s+|sh\s+)?(scripts/[\w.-]+\.sh)\b")


# ---------------------------------------------------------------------------------------------------- the Makefile
@dataclass
class Rule:
    prerequisites: list[str] = field(default_factory=list)
    recipe: list[str] = field(default_factory=list)


def parse_makefile(path: Path) -> dict[str, Rule]:
    """Targets of a Makefile (and the files it includes): prerequisites and recipe lines. Enough make for this
    project's Makefile: `target...: prerequisites ## help`, tab-indented recipes, `include FILE`."""
    rules: dict[str, Rule] = {}
    current: list[Rule] = []
    for raw in path.read_text().splitlines():
        if raw.startswith("\t"):
            for rule in current:
                rule.recipe.append(raw.strip())
            continue
        line = raw.split("##", 1)[0].rstrip()
        if line.startswith("include "):
            for included in line.split()[1:]:
                for name, rule in parse_makefile(REPO / included).items():
                    rules.setdefault(name, Rule()).prerequisites += rule.prerequisites
                    rules[name].recipe += rule.recipe
            current = []
            continue
        head, sep, rest = line.partition(":")
        if not sep or rest.startswith("=") or not head.strip() or any(c in head for c in "=$?+"):
            if line.strip() and not raw.startswith(" "):
                current = []
            continue
        targets = [t for t in head.split() if not t.startswith(".")]
        current = []
        for target in targets:
            rule = rules.setdefault(target, Rule())
            rule.prerequisites += rest.split()
            current.append(rule)
    return rules


def script_needs(script: str) -> set[str]:
    """What running scripts/X.sh needs of the offline build machine."""
    if script == ENGINE_BUILD:
        return {"the engine build (scripts/build-engine.sh)"}
    text = (REPO / script).read_text()
    if SHARED_SOURCES not in text:
        return set()
    if THIRD_PARTY_OVERRIDE in text:
        return {f"THIRD_PARTY or ../shared ({script})"}
    return {f"../shared ({script})"}


def recipe_needs(line: str) -> set[str]:
    needs: set[str] = set()
    if "../shared" in line or SHARED_SOURCES in line:
        needs.add(f"../shared (`{line}`)")
    for script in SCRIPT_CALL.findall(line):
        needs |= script_needs(script)
    return needs


def target_needs(rules: dict[str, Rule], target: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """What `make TARGET` needs of the offline build machine, its prerequisites followed."""
    rule = rules.get(target)
    if rule is None or target in seen:
        return set()
    needs: set[str] = set()
    for line in rule.recipe:
        needs |= recipe_needs(line)
    for prerequisite in rule.prerequisites:
        needs |= target_needs(rules, prerequisite, seen | {target})
    return needs


def target_runs_pulumi(rules: dict[str, Rule], target: str, seen: frozenset[str] = frozenset()) -> bool:
    rule = rules.get(target)
    if rule is None or target in seen:
        return False
    return any(RUNS_PULUMI.search(line) for line in rule.recipe) or any(
        target_runs_pulumi(rules, p, seen | {target}) for p in rule.prerequisites
    )


def make_targets(command: str) -> list[str]:
    """Targets of every `make ...` in a shell command (variables and options skipped)."""
    targets: list[str] = []
    for call in MAKE_CALL.findall(command):
        targets += [word for word in call.split() if "=" not in word and not word.startswith("-")]
    return targets


# ---------------------------------------------------------------------------------------------------- the workflows
def expanded_steps(steps: list[dict[str, Any]], base: Path = REPO) -> list[dict[str, Any]]:
    """Steps with each local composite action (`uses: ./...`) replaced by its own steps, in order."""
    out: list[dict[str, Any]] = []
    for step in steps:
        uses = str(step.get("uses") or "")
        if uses.startswith("./"):
            action = yaml.safe_load((base / uses / "action.yml").read_text())
            assert action["runs"]["using"] == "composite", f"{uses}: only composite local actions are read here"
            out += expanded_steps(action["runs"]["steps"], base)
        else:
            out.append(step)
    return out


def job_problems(job: dict[str, Any], rules: dict[str, Rule], pulumi_version: str, base: Path = REPO) -> list[str]:
    """Why a job would not run on a runner with the internet and no ../shared, or does not install pulumi the
    usual way; empty when it does."""
    problems: list[str] = []
    third_party = "THIRD_PARTY" in (job.get("env") or {})
    pulumi_installed = False
    for step in expanded_steps(job.get("steps") or [], base):
        uses, run = str(step.get("uses") or ""), str(step.get("run") or "")
        env = {**(job.get("env") or {}), **(step.get("env") or {})}
        if "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION" in env:
            problems.append("turns off the engine's plugin acquisition")
        if uses.startswith(PULUMI_ACTION):
            inputs = step.get("with") or {}
            if str(inputs.get("pulumi-version") or "") != pulumi_version:
                problems.append(f"{uses} without pulumi-version {pulumi_version} (the CLI the offline build pins)")
            else:
                pulumi_installed = True
        step_third_party = third_party or "THIRD_PARTY" in env or re.search(r"THIRD_PARTY=\S+\s+make\b", run)
        needs: set[str] = set()
        for line in run.splitlines():
            needs |= recipe_needs(line)
        runs_pulumi = bool(RUNS_PULUMI.search(run))
        for target in make_targets(run):
            needs |= target_needs(rules, target)
            runs_pulumi |= target_runs_pulumi(rules, target)
        if step_third_party:
            needs = {need for need in needs if not need.startswith("THIRD_PARTY or ")}
        problems += [f"`{run.strip()}` needs {need}" for need in sorted(needs)]
        if runs_pulumi and not pulumi_installed:
            problems.append(f"`{run.strip()}` runs pulumi before pulumi/actions installs the CLI")
        if re.search(r"THIRD_PARTY=\S+.*>>\s*\"?\$GITHUB_ENV", run):
            third_party = True
    return problems


def build_engine_pulumi_version() -> str:
    match = re.search(r"^PULUMI_VERSION=v(\S+)$", (REPO / ENGINE_BUILD).read_text(), re.M)
    assert match, f"no PULUMI_VERSION in {ENGINE_BUILD}"
    return match.group(1)


# ---------------------------------------------------------------------------------------------------- the tests
def test_every_workflow_is_read() -> None:
    assert {p.name for p in WORKFLOWS} >= {"preview.yml", "deploy.yml", "drift.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_job_needs_the_offline_build_machine(workflow: Path) -> None:
    rules = parse_makefile(REPO / "Makefile")
    version = build_engine_pulumi_version()
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    problems = {name: job_problems(job, rules, version) for name, job in jobs.items()}
    assert problems == {name: [] for name in jobs}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_each_workflow_runs_pulumi_through_the_pinned_pulumi_actions(workflow: Path) -> None:
    version = build_engine_pulumi_version()
    steps = [s for job in yaml.safe_load(workflow.read_text())["jobs"].values() for s in expanded_steps(job["steps"])]
    pulumi_steps = [s for s in steps if str(s.get("uses") or "").startswith(PULUMI_ACTION)]
    assert pulumi_steps, f"{workflow.name} runs no pulumi command"
    assert {str(s["with"].get("pulumi-version")) for s in pulumi_steps} == {version}
    assert all(s["with"].get("command") for s in pulumi_steps)


def test_lint_and_unit_tests_need_no_engine_build() -> None:
    rules = parse_makefile(REPO / "Makefile")
    assert target_needs(rules, "lint") == set()
    assert not any("engine build" in need for need in target_needs(rules, "test-unit"))


def test_the_checker_sees_the_engine_through_prerequisites() -> None:
    rules = parse_makefile(REPO / "Makefile")
    # The targets that do need this machine are seen as such: the checker is not blind.
    assert "the engine build (scripts/build-engine.sh)" in target_needs(rules, "lab-provision")
    assert "the engine build (scripts/build-engine.sh)" in target_needs(rules, "vm-lab-up")  # via an include
    assert target_needs(rules, "pgpool2-exporter") == {"THIRD_PARTY or ../shared (scripts/build-pgpool2-exporter.sh)"}
    assert target_runs_pulumi(rules, "demo") and not target_runs_pulumi(rules, "test-unit")


OLD_MAKEFILE = """\
setup: .venv/.synced ## Python environment
lint: setup engine ## ruff, mypy, shellcheck, actionlint
\t.venv/bin/ruff check .
\tPATH=$(CURDIR)/.venv/bin:$$PATH .tools/bin/actionlint
engine: pgpool2-exporter ## the engine
\tbash scripts/build-engine.sh
pgpool2-exporter: ## pgpool2_exporter
\tbash scripts/build-pgpool2-exporter.sh
test-unit: setup pgpool2-exporter ## unit tests
\t.venv/bin/pytest -q tests/unit
"""
OLD_UNIT_JOB = {
    "runs-on": "ubuntu-24.04",
    "steps": [
        {"uses": "actions/checkout@v4"},
        {"uses": "astral-sh/setup-uv@v6", "with": {"version": "0.13.9"}},
        {"run": "make setup lint test-unit"},
    ],
}


def test_a_unit_job_whose_lint_builds_the_engine_is_refused(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(OLD_MAKEFILE)
    problems = job_problems(OLD_UNIT_JOB, parse_makefile(makefile), "3.274.1", tmp_path)
    assert "`make setup lint test-unit` needs the engine build (scripts/build-engine.sh)" in problems
    # And without the upstream sources, the exporter build would look for ../shared.
    assert "`make setup lint test-unit` needs THIRD_PARTY or ../shared (scripts/build-pgpool2-exporter.sh)" in problems


def test_a_pulumi_step_without_the_pinned_cli_or_with_plugin_acquisition_off_is_refused(tmp_path: Path) -> None:
    job = {
        "env": {"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"},
        "steps": [
            {"run": "pulumi preview --stack dev"},
            {"uses": "pulumi/actions@v6", "with": {"command": "up", "stack-name": "dev"}},
        ],
    }
    problems = job_problems(job, {}, "3.274.1", tmp_path)
    assert "`pulumi preview --stack dev` runs pulumi before pulumi/actions installs the CLI" in problems
    assert "pulumi/actions@v6 without pulumi-version 3.274.1 (the CLI the offline build pins)" in problems
    assert "turns off the engine's plugin acquisition" in problems


def test_the_exporter_sources_checked_out_in_ci_are_the_tree_the_build_script_builds() -> None:
    # THIRD_PARTY replaces ../shared/third_party only if the checkout lands where the script looks for its tree.
    tree = re.search(r"^TREE=(\S+)$", (REPO / "scripts/build-pgpool2-exporter.sh").read_text(), re.M)
    assert tree
    action = yaml.safe_load((REPO / ".github/actions/pgpool2-exporter/action.yml").read_text())
    checkout = next(s for s in action["runs"]["steps"] if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"]["repository"] == "pgpool/pgpool2_exporter"
    assert checkout["with"]["path"] == f".tools/third_party/{tree.group(1)}"
    exported = next(s["run"] for s in action["runs"]["steps"] if "GITHUB_ENV" in str(s.get("run", "")))
    assert 'THIRD_PARTY=$GITHUB_WORKSPACE/.tools/third_party" >>"$GITHUB_ENV"' in exported
