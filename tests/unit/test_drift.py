"""Drift as `pulumi refresh` sees it (components.drift): what the observation reports, how the counters that re-run
the repairing steps move, and which steps carry which counters. The lab's lifecycle drives it on real servers."""

from __future__ import annotations

from components.drift import UNREACHABLE, _DriftProvider, next_generations, parse_observation
from components.plan import drift_observe_command, provisioning_plan

from .test_render import stack

OBSERVED = (
    "/etc/pgpool2/pool_hba.conf\tcontent differs\n"
    "/var/lib/postgresql/.pgpass\tmode 644, the program set 600\n"
    "pgpool2\tdisabled, the program enabled it; inactive, the program started it\n"
    "checked\t48\n"
)


def test_the_observation_names_each_drifted_path_and_unit_and_nothing_else() -> None:
    assert parse_observation(OBSERVED) == {
        "/etc/pgpool2/pool_hba.conf": "content differs",
        "/var/lib/postgresql/.pgpass": "mode 644, the program set 600",
        "pgpool2": "disabled, the program enabled it; inactive, the program started it",
    }
    assert parse_observation("checked\t48\n") == {}


def test_a_drifted_key_counts_once_per_refresh_and_a_repaired_one_stays_still() -> None:
    first = next_generations({}, parse_observation(OBSERVED))
    assert first == {"/etc/pgpool2/pool_hba.conf": 1, "/var/lib/postgresql/.pgpass": 1, "pgpool2": 1}
    # The next refresh after the repair finds nothing: the counters (the steps' triggers) do not move.
    assert next_generations(first, {}) == first
    # The same change by hand again later is seen again.
    again = next_generations(first, {"pgpool2": "inactive, the program started it"})
    assert again["pgpool2"] == 2 and again["/etc/pgpool2/pool_hba.conf"] == 1
    # A server that does not answer is reported, and moves no counter.
    assert next_generations(first, {UNREACHABLE: "not checked"}) == first


def test_an_update_of_the_resource_keeps_the_counters_and_contacts_no_server() -> None:
    provider = _DriftProvider()
    olds = {"node": "server1", "host": "a", "port": 22, "user": "u", "private_key": "k", "observe": "x",
            "drift": {"pgpool2": "inactive"}, "generations": {"pgpool2": 3}}  # fmt: skip
    news = {**olds, "host": "b", "drift": None, "generations": None}
    assert provider.diff("id", olds, news).changes is True
    assert provider.diff("id", olds, {**olds}).changes is False
    updated = provider.update("id", olds, news).outs
    assert updated["generations"] == {"pgpool2": 3} and updated["host"] == "b"
    created = provider.create(news).outs
    assert created["generations"] == {} and created["drift"] == {}


def test_every_file_step_and_the_services_applying_them_carry_their_drift_keys() -> None:
    config = stack("lab")
    steps = {step.ref: step for step in provisioning_plan(config)}
    files = [step for step in steps.values() if step.name.startswith("file-")]
    assert files
    for step in files:
        if step.name == "file-etc-hosts":  # a marked block, not a whole file: not compared
            assert step.drift_keys == ()
        else:
            assert len(step.drift_keys) == 1 and step.drift_keys[0].startswith("/"), step.ref
    pgpool = steps["server2/pgpool-service"].drift_keys
    assert pgpool[0] == "pgpool2"
    assert {"/etc/pgpool2/pool_hba.conf", "/etc/pgpool2/pgpool.conf", "/etc/pgpool2/pool_passwd"} <= set(pgpool)
    assert "/etc/pgpool2/scripts/failover.sh" not in pgpool  # read when it runs: nothing to reload
    postgresql = steps["server1/postgresql-config"].drift_keys
    assert {"/etc/postgresql/15/main/conf.d/pgha.conf", "/etc/postgresql/15/main/pg_hba.conf"} <= set(postgresql)
    assert steps["server3/kernel-settings"].drift_keys == ("/etc/sysctl.d/60-pgha.conf",)
    assert "drift-observe" in drift_observe_command(config)
