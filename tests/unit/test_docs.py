"""The documentation: generated parts match their sources, the README stays short and true, no diary in the docs."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("docs_generate", REPO / "scripts" / "docs_generate.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

PAGES = sorted((REPO / "docs").glob("*.md"))


# ---------------------------------------------------------------------------------------------- generated parts
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_generated_parts_match_their_sources(page: Path) -> None:
    text = page.read_text()
    assert gen.regenerate(text) == text, f"{page.name} differs from Pulumi.yaml / docs/figures: run `make docs`"


def test_configuration_page_is_generated_from_pulumi_yaml() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    assert "<!-- generated: config -->" in text
    assert "<!-- generated: config-fields -->" in text
    keys = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    for key in keys:
        assert f"| `{key.split(':', 1)[1]}`" in text, f"{key} is not in docs/configuration.md"


def test_configuration_table_follows_a_changed_description(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    doc["config"]["pgpool-ha:vip"]["description"] = "a new description"
    (tmp_path / "Pulumi.yaml").write_text(yaml.safe_dump(doc))
    page = "<!-- generated: config -->\n<!-- end generated -->\n"
    out = gen.regenerate(page, root=tmp_path)
    assert "| `vip` | string | `192.168.137.150` | a new description |" in out
    assert gen.regenerate(page) != out


def test_a_missing_figures_file_says_so_and_invents_nothing(tmp_path: Path) -> None:
    for spec in ("report lifecycle-report.json", "bench-faults bench.json", "flat soak.json", "times t.json"):
        out = gen.regenerate(f"<!-- generated: {spec} -->\nold\n<!-- end generated -->\n", figures=tmp_path)
        assert "No figures file is committed yet" in out
        assert "old" not in out
        assert not re.search(r"\d+\.\d+ s", out)


def test_a_report_file_gives_one_row_per_measurement(tmp_path: Path) -> None:
    (tmp_path / "drills-report.json").write_text(
        json.dumps(
            {
                "test_d_x": {"promoted_s": 1.5, "writes": {"failed": 2}, "log": ["a | b", "c"]},
                "test_m1_y": {"fired_s": 20.1},
            }
        )
    )
    out = gen.regenerate(
        "<!-- generated: report drills-report.json test_d -->\n<!-- end generated -->\n", figures=tmp_path
    )
    assert "| `test_d_x` | promoted_s | 1.5 |" in out
    assert "| `test_d_x` | writes.failed | 2 |" in out
    assert "| `test_d_x` | log | a \\| b / c |" in out
    assert "test_m1_y" not in out


def test_a_times_file_gives_the_phases_their_total_and_the_slowest_tests(tmp_path: Path) -> None:
    times = {"phases": {"provision": 100.4, "drills": 200.2}, "tests": {"a.py::test_x": 90.0, "b.py::test_y": 5.0}}
    (tmp_path / "t.json").write_text(json.dumps(times))
    out = gen.regenerate("<!-- generated: times t.json 1 -->\n<!-- end generated -->\n", figures=tmp_path)
    assert "| provision | 100 |" in out and "| drills | 200 |" in out
    assert "| **total** | **301** (5.0 min) |" in out
    assert "| `test_x` | 90 |" in out
    assert "test_y" not in out  # only the slowest one was asked for
    with pytest.raises(gen.DocsError, match="times needs"):
        gen.regenerate("<!-- generated: times t.json many -->\n<!-- end generated -->\n", figures=tmp_path)


def test_a_bench_file_gives_the_outage_table(tmp_path: Path) -> None:
    fault = {"n": 2, "median": 0.9, "min": 0.8, "max": 1.0, "values": [0.8, 1.0], "lost": 0}
    fault["longest_gap_s"] = {"median": 1.1, "max": 1.2}
    tp = {"ratio": 0.75, "tps_direct": 100.0, "tps_pgpool": 75.0}
    vip = {**fault, "multi_host": {"median": 0.4, "max": 0.5}}
    faults = {"primary_postgres_loss": fault, "vip_holder_crash": vip}
    bench = {"profiles": {"fast": {"faults": faults, "throughput": {"read_write": tp}}}}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    page = "<!-- generated: bench-faults bench.json -->\n<!-- end generated -->\n"
    page += "<!-- generated: bench-throughput bench.json -->\n<!-- end generated -->\n"
    out = gen.regenerate(page, figures=tmp_path)
    same = "| 2 | 0.9 | 1.0 | 0.8 / 1.0 | 1.1 | 1.2 |"
    assert f"| fast | asynchronous | `primary_postgres_loss` {same} - | - | 0 |" in out
    assert f"| fast | asynchronous | `vip_holder_crash` {same} 0.4 | 0.5 | 0 |" in out
    assert "| fast | `read_write` | 100.0 | 75.0 | 0.75 |" in out


def test_unbalanced_markers_are_refused() -> None:
    with pytest.raises(gen.DocsError):
        gen.regenerate("<!-- generated: config -->\nno end\n")


# --------------------------------------------------------------------------------------------------- the README
def test_readme_is_at_most_8_kib() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= 8192, f"README.md is {size} bytes: move detail into docs/"


def test_readme_first_commands_are_the_makefile_targets_and_the_ci_command() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:sh|bash)\n(.*?)```", readme, re.S)
    assert first_block, "README.md has no command block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands[:2] == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must run the README's test command"


def test_links_between_pages_resolve() -> None:
    for page in [REPO / "README.md", *PAGES]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"


# ---------------------------------------------------------------------------------------- no diary, no issues
# Prose and code comments alike: the docs, the program, the lab tests, the build scripts.
SCANNED = [
    REPO / "README.md",
    REPO / "docs",
    REPO / "lab" / "README.md",
    REPO / "lab" / "vm" / "README.md",
    REPO / "components",
    REPO / "templates",
    REPO / "lab",
    REPO / "tests" / "ha",
    REPO / "tests" / "lifecycle",
    REPO / "tests" / "lab_infra",
    REPO / "tests" / "conftest.py",
    REPO / "tests" / "labpolicy.py",
    REPO / "scripts",
    REPO / "Makefile",
    REPO / ".ci",
]
ISSUE = re.compile(r"\bissues?\s+#?\d+|(?<![\w$&/#{'\"])#\d{1,5}\b(?![\w-])", re.I)
DIARY = re.compile(
    r"\b(?:19|20)\d\d-[01]\d-[0-3]\d\b"  # a calendar date
    r"|\b[0-2]\d:[0-5]\d\s*-\s*[0-2]\d:[0-5]\d\b"  # a run's time window, 13:01-13:44
    r"|\b[0-2]?\d:[0-5]\d(?::[0-5]\d)? (?:UTC|run)\b"  # 09:45 UTC, the 11:07 run
    r"|\b(?:commit|main|clone of|run of)\s+[0-9a-f]{7,40}\b"  # a commit a run was made on
    r"|\b(?:previous|earlier|last) session\b",
    re.I,
)
# The one date allowed: a full timestamp with its UTC offset, in quotes, as a restore target is written
# (`pgha-restore --time '2026-11-27 03:12:45+00'`, `TIME='...'`): a config example, not an event.
EXAMPLE_TIMESTAMP = re.compile(r"""(['"])\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d\1""")


def scanned_files() -> list[Path]:
    """Prose only: the run files under docs/figures/ carry their run's timestamps, as data."""
    out: list[Path] = []
    for root in SCANNED:
        out += [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file() and f.suffix != ".pyc")
    return [f for f in out if f.parent != REPO / "docs" / "figures" or f.suffix != ".json"]


def prose(text: str) -> str:
    """The text without its generated parts: those are the run files' content, held to them by the test above."""
    return gen.MARKER.sub(lambda m: m.group(1) + m.group(4), text)


def diary_hits(text: str) -> list[str]:
    hits = []
    for n, line in enumerate(text.splitlines(), 1):
        line = EXAMPLE_TIMESTAMP.sub("", line)
        hits += [f"{n}: {m.group(0)!r}" for rx in (ISSUE, DIARY) for m in rx.finditer(line)]
    return hits


def test_no_issue_numbers_or_dated_development_events() -> None:
    found = {str(f.relative_to(REPO)): hits for f in scanned_files() if (hits := diary_hits(prose(f.read_text())))}
    assert not found, f"issue numbers or dated events (say it timelessly): {found}"


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("fixed in issue 12", True),
        ("see #12 for details", True),
        ("the 11:07 run", True),
        ("runs 13:01-13:44 (main f932318)", True),
        ("measured on 2026-11-27", True),
        ("as in the previous session", True),
        ("pgha-restore --time '2026-11-27 03:12:45+00'", False),
        ('make lab-backup-restore TIME="2026-11-27 03:12:45+00"', False),
        ("postgresql.packageVersion 15.20-0+deb12u1", False),
        ("`$#` arguments, OnCalendar Sun *-*-* 01:00:00", False),
    ],
)
def test_the_diary_rule(text: str, hit: bool) -> None:
    assert bool(diary_hits(text)) is hit


def test_generated_parts_are_not_scanned_as_prose() -> None:
    text = "before\n<!-- generated: flat soak.json -->\n| started | 2026-11-27 |\n<!-- end generated -->\nafter\n"
    assert not diary_hits(prose(text))
    assert diary_hits(prose(text.replace("after", "the 11:07 run")))
