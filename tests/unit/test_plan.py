"""The provisioning plan: order, idempotence markers, and no secret in any command."""

from __future__ import annotations

import itertools
import shlex
import subprocess

import pytest

from components.crypto import scram_salt, scram_sha256_verifier
from components.paths import MEMBERS_STATE
from components.plan import Step, provisioning_plan
from components.render import render_node_files

from .test_render import FAKE, debian12, secret_values, stack

CONFIGS = {
    "dev": lambda: stack("dev"),
    "lab": lambda: stack("lab"),
    "prod": lambda: stack("prod"),
    "debian12": debian12,
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    return CONFIGS[request.param]()


def index(steps: list[Step]) -> dict[str, int]:
    return {s.ref: i for i, s in enumerate(steps)}


def test_refs_unique_and_dependencies_come_first(config) -> None:
    steps = provisioning_plan(config)
    pos = index(steps)
    assert len(pos) == len(steps)
    for step in steps:
        for dep in step.after:
            assert pos[dep] < pos[step.ref], (step.ref, dep)


def test_standbys_after_the_primary_bootstrap(config) -> None:
    steps = provisioning_plan(config)
    pos = index(steps)
    boot = f"{config.primary_node.name}/primary-bootstrap"
    for node in config.standby_nodes:
        clone = f"{node.name}/standby-clone"
        assert pos[boot] < pos[clone]
        assert boot in next(s for s in steps if s.ref == clone).after


def test_pgpool_starts_after_every_file_and_postgresql_everywhere(config) -> None:
    steps = provisioning_plan(config)
    pos = index(steps)
    ready = [f"{config.primary_node.name}/primary-bootstrap"] + [
        f"{n.name}/standby-clone" for n in config.standby_nodes
    ]
    for node in config.nodes:
        service = next(s for s in steps if s.ref == f"{node.name}/pgpool-service")
        own = [s for s in steps if s.node == node.name and s.name.startswith("file-")]
        assert len(own) == len(render_node_files(config, node, FAKE))
        for step in own:
            assert step.ref in service.after and pos[step.ref] < pos[service.ref]
        for ref in ready:
            assert ref in service.after
        assert service.delete and "systemctl stop pgpool2" in service.delete and "ip addr del" in service.delete
        assert "triggers" not in service.create


def test_no_secret_in_any_command_string(config) -> None:
    for step in provisioning_plan(config):
        for command in filter(None, (step.create, step.update, step.delete)):
            for value in secret_values():
                assert value not in command, (step.ref, value)
            assert "PGPASSWORD" not in command


def test_secret_steps_are_marked_and_carry_secrets_only_on_stdin(config) -> None:
    for step in provisioning_plan(config):
        if step.stdin is None:
            assert not step.secret
            continue
        content = step.stdin(FAKE)
        leaked = [v for v in secret_values() if v in content]
        if leaked:
            assert step.secret, step.ref
    boot = next(s for s in provisioning_plan(config) if s.name == "primary-bootstrap")
    assert boot.secret and boot.stdin is not None
    sql = boot.stdin(FAKE)
    # The server gets SCRAM verifiers, never a password (not even in a failing statement it would log).
    assert not [v for v in secret_values() if v in sql]
    verifier = scram_sha256_verifier(FAKE.postgres_password, scram_salt(FAKE.pgpool_key, "postgres"))
    assert f"SUPERUSER PASSWORD '{verifier}';" in sql
    assert boot.stdin(FAKE) == sql  # stable: no diff in a preview while nothing changed


def test_non_secret_stdin_does_not_depend_on_secrets(config) -> None:
    from .test_render import OTHER

    for step in provisioning_plan(config):
        if step.stdin is not None and not step.secret:
            assert step.stdin(FAKE) == step.stdin(OTHER), step.ref


def test_every_command_escalates_with_sudo_n(config) -> None:
    for step in provisioning_plan(config):
        assert shlex.split(step.create)[:2] == ["sudo", "-n"], step.ref


def test_one_file_step_per_file_and_a_pgpool_change_touches_few_steps() -> None:
    base = stack("lab")
    tuned = base.pgpool.timing.model_copy(update={"health_check_period": 9})
    changed = base.model_copy(update={"pgpool": base.pgpool.model_copy(update={"tuning": tuned})})
    before = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(base)}
    after = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(changed)}
    differ = sorted(ref for ref in before if before[ref] != after[ref])
    expected = sorted(
        [f"{n.name}/file-etc-pgpool2-pgpoolconf" for n in base.nodes] + [f"{n.name}/pgpool-service" for n in base.nodes]
    )
    # The fence's default isolation time follows pgpool's detection time (lab: tuned, 5 s -> 13 s with period 9).
    assert base.fence_isolation_seconds == 5 and changed.fence_isolation_seconds == 13
    fence = [f"{n.name}/{step}" for n in base.nodes for step in ("fence-service", "file-usr-local-lib-pgha-pgha-fence")]
    assert differ == sorted(expected + fence)
    # With isolationSeconds set, the fence is not touched by a pgpool timing change.
    pinned = base.model_copy(update={"fencing": base.fencing.model_copy(update={"isolation_seconds": 5})})
    pinned_changed = pinned.model_copy(update={"pgpool": changed.pgpool})
    before = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(pinned)}
    after = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(pinned_changed)}
    assert sorted(ref for ref in before if before[ref] != after[ref]) == expected


def test_standby_clone_never_reclones_a_member() -> None:
    config = stack("lab")
    clone = next(s for s in provisioning_plan(config) if s.name == "standby-clone")
    script = shlex.split(clone.create)[4]
    assert script.index('if [ -f "$MEMBER" ]') < script.index("pg-make-standby basebackup")


@pytest.mark.parametrize(("profile", "isolation"), [("walkthrough", 30), ("tuned", 5), ("fast", 3)])
def test_fence_runs_on_every_node_with_the_profile_isolation_time(profile: str, isolation: int) -> None:
    config = debian12(pgpool={"profile": profile})
    steps = {s.ref: s for s in provisioning_plan(config)}
    for node in config.nodes:
        step = steps[f"{node.name}/fence-service"]
        script, *args = shlex.split(step.create)[4:]
        assert args[-1] == "on" and "systemctl enable --quiet pgha-fence" in script
        assert "systemctl stop pgha-fence" in shlex.split(step.delete or "")[4]
        # After PostgreSQL is in its role everywhere (the fence reads standby.signal and the member marker).
        first = config.primary_node.name
        assert {f"{first}/primary-bootstrap", f"{node.name}/file-usr-local-lib-pgha-pgha-fence"} <= set(step.after)
        fence = next(f for f in render_node_files(config, node, FAKE) if f.path.endswith("/pgha-fence"))
        assert f"\nISOLATION_S={isolation}\n" in fence.content
        assert "\nNODE_COUNT=3\n" in fence.content and 'systemctl stop "$PG_UNIT"' in fence.content


def test_fence_can_be_turned_off_and_pinned() -> None:
    off = debian12(fencing={"enabled": False, "isolationSeconds": 7})
    assert off.fence_isolation_seconds == 7
    step = next(s for s in provisioning_plan(off) if s.name == "fence-service")
    assert shlex.split(step.create)[-1] == "off"


def _changed_steps(before_config, after_config) -> list[str]:
    before = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(before_config)}
    after = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(after_config)}
    assert before.keys() == after.keys()
    return sorted(ref for ref in before if before[ref] != after[ref])


def _with_parameters(config, **parameters):
    pg = config.postgresql.model_copy(update={"parameters": tuple(parameters.items())})
    return config.model_copy(update={"postgresql": pg})


def test_a_restart_only_setting_runs_the_rolling_restart_and_switchover_steps_a_reloadable_one_does_not() -> None:
    base = _with_parameters(stack("lab"), work_mem="4MB", shared_buffers="128MB")
    conf = [f"{n.name}/file-etc-postgresql-15-main-confd-pghaconf" for n in base.nodes]
    # postgresql-trial: the new file started in a scratch cluster first (its stdin), before anything is written.
    config_steps = [f"{n.name}/{s}" for n in base.nodes for s in ("postgresql-config", "postgresql-trial")]
    rolling = [f"{n.name}/{s}" for n in base.nodes for s in ("postgresql-restart", "postgresql-switchover")]
    reloadable = _with_parameters(stack("lab"), work_mem="8MB", shared_buffers="128MB")
    assert _changed_steps(base, reloadable) == sorted(conf + config_steps)
    restart_only = _with_parameters(stack("lab"), work_mem="4MB", shared_buffers="256MB")
    assert _changed_steps(base, restart_only) == sorted(conf + config_steps + rolling)
    # The preview shows the new value in the steps' commands (readable in a pull request).
    switchover = next(s for s in provisioning_plan(restart_only) if s.name == "postgresql-switchover")
    assert "shared_buffers='256MB'" in shlex.split(switchover.create)[4]
    assert "shared_buffers = '256MB'" in next(
        f.content for f in render_node_files(restart_only, restart_only.nodes[0], FAKE) if f.path.endswith("pgha.conf")
    )


def test_rolling_restart_one_node_at_a_time_after_pgpool_then_the_switchover_pass() -> None:
    config = debian12()  # the program's default: switchover off
    steps = provisioning_plan(config)
    at = index(steps)
    restarts = [s for s in steps if s.name == "postgresql-restart"]
    switchovers = [s for s in steps if s.name == "postgresql-switchover"]
    assert [s.node for s in restarts] == [s.node for s in switchovers] == [n.name for n in config.nodes]
    last_pgpool = max(at[f"{n.name}/pgpool-service"] for n in config.nodes)
    assert at[restarts[0].ref] > last_pgpool
    # Each step waits for the one before it: the standbys restart one at a time, the switchover comes after all.
    chain = [*restarts, *switchovers]
    for earlier, later in itertools.pairwise(chain):
        assert earlier.ref in later.after, f"{later.ref} does not wait for {earlier.ref}"
    assert [shlex.split(s.create)[6:] for s in chain] == [["standbys", "off"]] * 3 + [["primary", "off"]] * 3
    on = config.model_copy(update={"postgresql": config.postgresql.model_copy(update={"switchover_on_restart": True})})
    assert {tuple(shlex.split(s.create)[6:]) for s in provisioning_plan(on) if s.name == "postgresql-switchover"} == {
        ("primary", "on")
    }
    assert stack("lab").postgresql.switchover_on_restart and not stack("prod").postgresql.switchover_on_restart


def test_postgresql_config_no_longer_restarts_a_member() -> None:
    config = stack("lab")
    step = next(s for s in provisioning_plan(config) if s.name == "postgresql-config")
    script = shlex.split(step.create)[4]
    member_branch = script.index('if [ -n "$pending" ] && [ -f "$MEMBER" ]; then')
    restart = script.index('systemctl restart "$UNIT"')
    assert member_branch < script.index('elif [ -n "$pending" ]; then') < restart


def test_provisioning_writes_never_wait_for_a_synchronous_standby() -> None:
    """A fresh synchronous cluster has no standby when the primary's roles are created: those commits are local
    (the soak's first `up` of a synchronous stack hung in ALTER ROLE before this)."""
    config = debian12(postgresql={"synchronousReplication": True})
    bootstrap = next(s for s in provisioning_plan(config) if s.name == "primary-bootstrap")
    script = shlex.split(bootstrap.create)[4]
    assert "synchronous_standby_names = 'ANY 1" in next(
        f.content for f in render_node_files(config, config.nodes[0], FAKE) if f.path.endswith("pgha.conf")
    )
    definition = script[script.index("psql_local() {") : script.index("}", script.index("psql_local() {"))]
    assert "PGOPTIONS='-c synchronous_commit=local'" in definition
    assert "printf '%s\\n' \"$sql\" | psql_local" in script


def _steps_a_secret_change_touches(config, **changed: str) -> dict[str, list[str]]:
    """Per password change: the steps whose command or stdin differ (Pulumi runs exactly those)."""
    from dataclasses import replace

    rotated = replace(FAKE, **changed)
    before = {s.ref: (s.create, s.stdin(FAKE) if s.stdin else None) for s in provisioning_plan(config)}
    after = {s.ref: (s.create, s.stdin(rotated) if s.stdin else None) for s in provisioning_plan(config)}
    assert before.keys() == after.keys()
    touched: dict[str, list[str]] = {}
    for ref in before:
        if before[ref] != after[ref]:
            node, name = ref.split("/", 1)
            touched.setdefault(name, []).append(node)
    return touched


def test_a_password_change_pauses_health_checks_sets_roles_on_the_primary_then_reloads_pgpool() -> None:
    config = stack("lab")
    nodes = [n.name for n in config.nodes]
    everywhere = {
        "file-etc-pgpool2-pool_passwd",
        "file-etc-pgpool2-pgpool_secretsconf",
        "file-var-lib-postgresql-pgpass",
        "passwords-hold",
        "passwords-roles",
        "pgpool-secrets",
    }
    for key in ("pgpool_password", "postgres_password", "replication_password"):
        touched = _steps_a_secret_change_touches(config, **{key: "Rotated-" + key})
        # The bootstrap's stdin holds the SQL too, but it only sets passwords on a node that is no member yet.
        assert touched.pop("primary-bootstrap") == [config.primary_node.name], key
        if key == "replication_password":
            # No pgpool setting holds repl's password, its pool_passwd entry does.
            assert set(touched) == everywhere - {"file-etc-pgpool2-pgpool_secretsconf"}, touched
        elif key == "pgpool_password":
            # postgres_exporter and pgpool2_exporter log in as the check user: their password files, and their
            # restart (after the roles).
            exporter = {
                "file-etc-prometheus-pgha-postgres-exporterpass",
                "file-etc-prometheus-pgha-pgpool2-exporterpgpass",
                "monitoring-services",
            }
            assert set(touched) == everywhere | exporter, (key, touched)
        else:
            assert set(touched) == everywhere, (key, touched)
        assert all(sorted(v) == sorted(nodes) for v in touched.values()), touched
    # PCP: pgpool reads pcp.conf at every PCP login; no hold, no reload, no restart.
    touched = _steps_a_secret_change_touches(config, pcp_password="Rotated-pcp")
    assert set(touched) == {"file-etc-pgpool2-pcpconf", "file-var-lib-postgresql-pcppass"}, touched

    steps = provisioning_plan(config)
    pos = index(steps)
    holds = [f"{n}/passwords-hold" for n in nodes]
    roles = [f"{n}/passwords-roles" for n in nodes]
    last_switchover = max(pos[f"{n}/postgresql-switchover"] for n in nodes)
    for n in nodes:
        hold, role, secrets = (next(s for s in steps if s.ref == f"{n}/{name}") for name in
                               ("passwords-hold", "passwords-roles", "pgpool-secrets"))  # fmt: skip
        assert hold.secret and role.secret and secrets.secret
        assert pos[hold.ref] > last_switchover  # after the primary may have changed
        assert set(holds) <= set(role.after)  # every pgpool paused before any ALTER ROLE
        assert set(roles) <= set(secrets.after)  # no pgpool takes the new passwords before the primary has them
        assert role.stdin is not None and "ALTER ROLE" in role.stdin(FAKE)
        hold_script, role_script = shlex.split(hold.create)[4], shlex.split(role.create)[4]
        assert "health_check_period = 0" in hold_script and "/etc/pgpool2/pgpool_hold.conf" in hold_script
        assert role_script.index("pg_is_in_recovery()") < role_script.index("printf '%s\\n' \"$sql\" | psql_local")
        secrets_script = shlex.split(secrets.create)[4]
        assert '"$PASSWORDS" release 60' in secrets_script  # waits until every PostgreSQL takes them, then resumes
        # Bounded even if the up stops half-way: a timer resumes the checks (if the passwords agree by then).
        assert "systemd-run --quiet --unit=pgha-hold-expiry --on-active=600" in hold_script


def test_the_bootstrap_sets_passwords_only_on_a_node_that_is_no_member_yet() -> None:
    config = stack("lab")
    bootstrap = next(s for s in provisioning_plan(config) if s.name == "primary-bootstrap")
    script = shlex.split(bootstrap.create)[4]
    guard = script.index('if [ ! -f "$MEMBER" ] && [ -n "$("$PASSWORDS" refused 127.0.0.1)" ]; then')
    assert guard < script.index("printf '%s\\n' \"$sql\" | psql_local") < script.index("fi", guard)


def test_pgpool_includes_the_hold_file_last_and_the_directories_step_creates_it() -> None:
    config = stack("lab")
    node = config.nodes[0]
    conf = next(f.content for f in render_node_files(config, node, FAKE) if f.path == "/etc/pgpool2/pgpool.conf")
    includes = [line for line in conf.splitlines() if line.startswith("include")]
    assert includes[-1] == "include = '/etc/pgpool2/pgpool_hold.conf'", includes
    dirs = next(s for s in provisioning_plan(config) if s.ref == f"{node.name}/directories")
    assert "install -m 0640 -o root -g postgres /dev/null /etc/pgpool2/pgpool_hold.conf" in dirs.create


FIVE = [{"name": f"db-{x}", "address": f"10.9.0.{11 + i}"} for i, x in enumerate("abcde")]


def test_scale_out_adds_the_new_nodes_and_touches_no_restart_or_password_step_of_the_old_ones() -> None:
    three, five = debian12(), debian12(nodes=FIVE)
    before = {s.ref: s.create for s in provisioning_plan(three)}
    after = {s.ref: s.create for s in provisioning_plan(five)}
    added = {ref.split("/")[0] for ref in after.keys() - before.keys()}
    assert added == {"db-d", "db-e"}  # every step of the two new nodes, nothing else new
    assert before.keys() <= after.keys()
    changed = {ref.split("/")[1] for ref in before if before[ref] != after[ref]}
    # The member list is in these commands: each old node checks the primary and its pgpool restarts with 5 backends.
    assert {"cluster-member", "cluster-attach", "pgpool-service", "primary-bootstrap"} <= changed
    # No PostgreSQL restart, switchover or password step runs for a new node.
    assert not changed & {"postgresql-restart", "postgresql-switchover", "passwords-hold", "passwords-roles"}
    conf = next(f for f in render_node_files(five, five.nodes[0], FAKE) if f.path == "/etc/pgpool2/pgpool.conf")
    for key in ("backend_hostname4 = 'db-e'", "hostname4 = 'db-e'", "heartbeat_hostname4 = 'db-e'"):
        assert key in conf.content


def test_membership_runs_before_any_pgpool_restart_and_a_removed_node_leaves_on_delete() -> None:
    steps = provisioning_plan(debian12(nodes=FIVE))
    pos = index(steps)
    members = [s for s in steps if s.name == "cluster-member"]
    assert len(members) == 5
    for member in members:
        assert "# members: db-a db-b db-c db-d db-e" in member.create and member.create.endswith("pgha-cluster-member")
        assert member.delete is not None and "pgha-members leave" in member.delete
    by_ref = {s.ref: s for s in steps}

    def ancestors(ref: str) -> set[str]:
        found: set[str] = set()
        todo = list(by_ref[ref].after)
        while todo:
            dep = todo.pop()
            if dep not in found:
                found.add(dep)
                todo += by_ref[dep].after
        return found

    for service in (s for s in steps if s.name == "pgpool-service"):
        # Every pgpool depends on every node's membership step. Destroy deletes dependents first: every pgpool stops
        # before any node's leave runs, so leave sees no pgpool answer and leaves PostgreSQL alone (only a scale-in,
        # with the remaining pgpools running without the node, stops it).
        assert {m.ref for m in members} <= ancestors(service.ref), service.ref
    attach = [s for s in steps if s.name == "cluster-attach"]
    last_service = max(pos[s.ref] for s in steps if s.name == "pgpool-service")
    assert len(attach) == 5 and all(pos[a.ref] > last_service for a in attach)


def test_a_package_version_pin_touches_the_packages_step_then_the_rolling_restarts_only() -> None:
    base = debian12()
    pg = base.postgresql.model_copy(update={"package_version": "15.20-0+deb12u1"})
    pgpool = base.pgpool.model_copy(update={"package_version": "4.3.5-1+deb12u1"})
    pg_changed = {ref.split("/")[1] for ref in _changed_steps(base, base.model_copy(update={"postgresql": pg}))}
    assert pg_changed == {"packages", "postgresql-restart", "postgresql-switchover"}
    pgpool_changed = {ref.split("/")[1] for ref in _changed_steps(base, base.model_copy(update={"pgpool": pgpool}))}
    assert pgpool_changed == {"packages", "pgpool-service"}  # pgpool-service: the one-after-another restart
    packages = next(s for s in provisioning_plan(base.model_copy(update={"postgresql": pg})) if s.name == "packages")
    script = shlex.split(packages.create)[4]
    assert 'pins="postgresql-15=15.20-0+deb12u1 postgresql-client-15=15.20-0+deb12u1"' in script
    # dpkg must not restart PostgreSQL on every node at once: policy-rc.d says 101 for the install, then goes.
    assert "exit 101" in script and "trap restore_policy EXIT" in script and "--allow-downgrades $outdated" in script


def _run_check_step(
    tmp_path, config, name: str, recorded: list[dict[str, str]], psql_body: str, *, first_up: bool = False
):
    """Run a phase-0 check step's script against a recorded member list, with a stand-in psql whose body is
    `psql_body` (a bash `case` on its arguments: a stand-in for the network: the logic under test is the script's).
    first_up: the step's create command (the stack's first `up` on the node), else what a later `up` runs."""
    step = next(s for s in provisioning_plan(config) if s.name == name)
    command = step.create if first_up or step.update is None else step.update
    script = shlex.split(command)[4].replace(MEMBERS_STATE, str(tmp_path / "members"))
    (tmp_path / "members").write_text("".join(f"{n['name']} {n['address']}\n" for n in recorded))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "runuser").write_text('#!/bin/bash\nshift 3\nexec "$@"\n')  # runuser -u postgres -- CMD...
    (bin_dir / "psql").write_text(f"#!/bin/bash\n{psql_body}\n")
    for tool in ("runuser", "psql"):
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=False)


def _membership_check(tmp_path, nodes: list[dict[str, str]], recorded: list[dict[str, str]], primary: str):
    """The membership-check step with psql answering 'f' (primary) for the primary's address only."""
    address = next(n["address"] for n in recorded if n["name"] == primary)
    psql = f'case "$*" in *"host={address} "*) echo f ;; *) echo t ;; esac'
    return _run_check_step(tmp_path, debian12(nodes=nodes), "membership-check", recorded, psql)


def test_membership_check_refuses_a_change_that_drops_the_primary_or_moves_a_node_before_anything_is_written(
    tmp_path,
) -> None:
    three, five = FIVE[:3], FIVE
    grown = _membership_check(tmp_path, five, three, primary="db-b")
    assert grown.returncode == 0 and "primary db-b stays" in grown.stdout, grown
    shrunk = _membership_check(tmp_path, three, five, primary="db-a")
    assert shrunk.returncode == 0, shrunk
    dropped = _membership_check(tmp_path, three, five, primary="db-e")
    assert dropped.returncode == 1 and "the primary, db-e, is not in the new list" in dropped.stderr, dropped
    moved = _membership_check(tmp_path, [five[0], five[2], five[3]], five, primary="db-a")
    assert moved.returncode == 1 and "db-c would move from position 2 to 1" in moved.stderr, moved
    # Nothing can be written before every node's check passed.
    steps = provisioning_plan(debian12(nodes=FIVE))
    checks = {s.ref for s in steps if s.name == "membership-check"}
    assert len(checks) == 5
    for directories in (s for s in steps if s.name == "directories"):
        assert checks <= set(directories.after), directories.ref


def _hot_standby_check(
    tmp_path, parameters: dict[str, int], primary_runs: dict[str, int], *, first_up: bool = False, recorded=FIVE[:3]
):
    """The hot-standby-check step with the stack's `parameters`, psql answering as the primary on the second recorded
    member with `primary_runs`."""
    config = debian12(postgresql={"version": 15, "parameters": parameters})
    rows = "".join(f"{k}={v}\\n" for k, v in sorted(primary_runs.items()))
    psql = f'case "$*" in *"host={FIVE[1]["address"]} "*) printf "f\\n{rows}" ;; *) echo t ;; esac'
    return _run_check_step(tmp_path, config, "hot-standby-check", recorded, psql, first_up=first_up)


def test_the_first_up_of_a_stack_refuses_a_cluster_it_did_not_create_and_says_how_to_clear_it(tmp_path) -> None:
    """`pulumi destroy` keeps PostgreSQL and its data on existing hosts: the next stack's first `up` on such a host
    stops before anything is written, whatever the settings, naming what it found and the commands that clear it."""
    running = {"max_connections": 100, "max_locks_per_transaction": 64, "max_prepared_transactions": 0,
               "max_wal_senders": 10, "max_worker_processes": 8}  # fmt: skip
    foreign = _hot_standby_check(tmp_path, {}, running, first_up=True)
    assert foreign.returncode == 1, foreign
    message = foreign.stderr
    assert message.count("failed:") == 1 and "holds a cluster this stack did not create" in message, message
    assert "members db-a db-b db-c recorded in" in message, message
    for clear in ("pg_dropcluster --stop 15 main", "pg_createcluster --start 15 main",
                  f"rm -rf {MEMBERS_STATE.rsplit('/', 1)[0]} /var/lib/postgresql/15/pgha-member",
                  "then run pulumi up again (nothing was changed)"):  # fmt: skip
        assert clear in message, (clear, message)
    # A node the stack adds, or a fresh host: nothing recorded, nothing to refuse.
    fresh = _hot_standby_check(tmp_path, {}, running, first_up=True, recorded=[])
    assert fresh.returncode == 0 and "no cluster membership recorded" in fresh.stdout, fresh
    # A later `up` of the same stack runs the update command: the same cluster, compared, not refused.
    later = _hot_standby_check(tmp_path, {}, running)
    assert later.returncode == 0 and "not below the primary's (db-b)" in later.stdout, later
    # The create differs from the update only by the refusal in front (an existing stack's next `up` runs update).
    step = next(s for s in provisioning_plan(debian12()) if s.name == "hot-standby-check")
    assert step.update is not None and "did not create" not in step.update and "did not create" in step.create


def test_hot_standby_check_refuses_lowering_a_setting_below_the_running_primary_before_anything_is_written(
    tmp_path,
) -> None:
    running = {"max_connections": 130, "max_locks_per_transaction": 64, "max_prepared_transactions": 0,
               "max_wal_senders": 10, "max_worker_processes": 8}  # fmt: skip
    raised = _hot_standby_check(tmp_path, {"max_connections": 140}, running)
    assert raised.returncode == 0 and "not below the primary's (db-b)" in raised.stdout, raised
    same = _hot_standby_check(tmp_path, {"max_connections": 130}, running)
    assert same.returncode == 0, same
    lowered = _hot_standby_check(tmp_path, {"max_connections": 120, "max_worker_processes": 4}, running)
    assert lowered.returncode == 1, lowered
    assert "postgresql.parameters.max_connections=120 (the primary, db-b, runs 130)" in lowered.stderr, lowered
    assert "postgresql.parameters.max_worker_processes=4 (the primary, db-b, runs 8)" in lowered.stderr, lowered
    # Left out of the stack: PostgreSQL's default (100) is what the nodes get, and it is lower than 130.
    default = _hot_standby_check(tmp_path, {}, running)
    assert default.returncode == 1 and "max_connections=100 (the primary, db-b, runs 130)" in default.stderr, default
    # Nothing can be written before every node's check passed.
    steps = provisioning_plan(debian12())
    checks = {s.ref for s in steps if s.name == "hot-standby-check"}
    assert len(checks) == 3
    for directories in (s for s in steps if s.name == "directories"):
        assert checks <= set(directories.after), directories.ref
