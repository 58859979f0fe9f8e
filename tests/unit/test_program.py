"""The real __main__.py under Pulumi mocks: resource graph, inputs that matter, secrets, bad input.

Every test asserts on registrations recorded while the program ran (see pulumi_harness), after it finished;
`assert_ran()` fails a test whose program registered nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from components.cloudinit import render_seed
from components.config import ConfigError
from components.stack import load_stack_config

from .pulumi_harness import ProgramRun, run_program, unwrap

LIBVIRT = "libvirt:index/"
COMMAND = "command:remote:Command"
GIB = 1024**3


def count(run: ProgramRun, type_: str) -> int:
    return len(run.of_type(type_))


def test_dev_stack_resource_graph() -> None:
    run = run_program("dev")
    run.assert_ran()
    assert count(run, "pulumi:providers:libvirt") == 1
    assert count(run, f"{LIBVIRT}network:Network") == 2
    # One base image + three database nodes' roots + the backup repository host's root.
    assert count(run, f"{LIBVIRT}volume:Volume") == 5
    assert count(run, f"{LIBVIRT}cloudInitDisk:CloudInitDisk") == 4
    assert count(run, f"{LIBVIRT}domain:Domain") == 4
    assert count(run, "pgha:infra:Infrastructure") == 1
    assert count(run, "pgha:infra:ClusterNetwork") == 1
    assert count(run, "pgha:infra:BaseImage") == 1
    assert count(run, "pgha:infra:VirtualMachine") == 4
    assert count(run, "pgha:database:PostgresCluster") == 1
    assert count(run, "pgha:database:DatabaseNode") == 3
    assert count(run, "pgha:backup:BackupRepository") == 1
    assert count(run, "pgha:secrets:Credentials") == 1
    # Children are parented to the component that owns them.
    for domain in run.of_type(f"{LIBVIRT}domain:Domain"):
        parent = run.by_urn(domain.parent)
        assert parent.type == "pgha:infra:VirtualMachine"
        assert run.by_urn(parent.parent).type == "pgha:infra:Infrastructure"
    for network in run.of_type(f"{LIBVIRT}network:Network"):
        assert run.by_urn(network.parent).type == "pgha:infra:ClusterNetwork"
    commands = run.of_type(COMMAND)
    assert commands, "no provisioning command"
    owners = {cmd.name.split("-", 1)[0]: run.by_urn(cmd.parent) for cmd in commands}
    assert {name: owner.type for name, owner in owners.items()} == {
        "server1": "pgha:database:DatabaseNode",
        "server2": "pgha:database:DatabaseNode",
        "server3": "pgha:database:DatabaseNode",
        "backup": "pgha:backup:BackupRepository",
    }
    for owner in owners.values():
        assert run.by_urn(owner.parent).type == "pgha:database:PostgresCluster"
    backup_domain = run.named("infra-backup-domain")
    assert backup_domain.plain("memory") == 1024  # the smaller repository VM (backup.memoryMib)
    assert run.named("infra-server1-domain").plain("memory") == 2048
    for secret in run.of_type("random:index/randomPassword:RandomPassword"):
        assert run.by_urn(secret.parent).type == "pgha:secrets:Credentials"


def test_dev_stack_inputs_that_matter() -> None:
    run = run_program("dev")
    run.assert_ran()
    config = load_stack_config("dev")
    networks = {n.plain("name"): n for n in run.of_type(f"{LIBVIRT}network:Network")}
    cluster = networks["pgha-dev-cluster"]
    assert cluster.plain("mode") == "none"
    assert cluster.plain("addresses") == ["192.168.137.0/24"]
    # No DHCP on the cluster segment: libvirt would hand out the whole subnet, the VIP included.
    assert cluster.plain("dhcp") == {"enabled": False}
    egress = networks["pgha-dev-egress"]
    assert egress.plain("mode") == "nat" and egress.plain("dhcp") == {"enabled": True}

    volumes = {v.plain("name"): v for v in run.of_type(f"{LIBVIRT}volume:Volume")}
    base = volumes["pgha-dev-base.qcow2"]
    assert base.plain("source") == config.libvirt.base_image and "size" not in base.inputs
    seeds = {s.plain("name"): s for s in run.of_type(f"{LIBVIRT}cloudInitDisk:CloudInitDisk")}
    domains = {d.plain("name"): d for d in run.of_type(f"{LIBVIRT}domain:Domain")}
    for node in config.nodes:
        root = volumes[f"pgha-dev-{node.name}-root.qcow2"]
        assert root.plain("baseVolumeId") == "infra-hv0-image-volume-id"  # copy-on-write over the base image
        assert root.plain("size") == 20 * GIB
        seed = seeds[f"pgha-dev-{node.name}-seed.iso"]
        expected = render_seed(config, node)
        assert seed.plain("networkConfig") == expected.network_config
        network = yaml.safe_load(seed.plain("networkConfig"))
        assert network["ethernets"]["cluster"]["set-name"] == "enp0s8"
        assert network["ethernets"]["cluster"]["addresses"] == [f"{node.address}/24"]
        domain = domains[f"pgha-dev-{node.name}"]
        nics = domain.plain("networkInterfaces")
        assert [nic["mac"] for nic in nics] == [expected.cluster_mac, expected.egress_mac]
        assert nics[0]["networkId"] == "infra-hv0-net-cluster-id"
        assert domain.plain("type") == "kvm" and domain.plain("memory") == 2048 and domain.plain("vcpu") == 2
        # The real provider asks the agent for addresses on every read when qemuAgent is on, and the create fails
        # while the guest still boots; the agent channel is in the domain either way.
        assert domain.plain("qemuAgent") is False
        assert "xml" not in domain.inputs  # no TCG cache limit under KVM
        assert domain.plain("consoles")[0]["targetType"] == "serial"
        assert domain.plain("cloudinit") == f"infra-{node.name}-seed-id"
        assert domain.plain("disks") == [{"volumeId": f"infra-{node.name}-root-id"}]
    assert run.outputs["vip"] == "192.168.137.150"
    assert run.outputs["pgpoolEndpoint"] == "192.168.137.150:9999"
    assert run.outputs["nodeAddresses"] == {
        "server1": "192.168.137.11",
        "server2": "192.168.137.12",
        "server3": "192.168.137.13",
    }
    # The backup repository host runs Prometheus and Alertmanager (reachable from the cluster subnet only).
    assert run.outputs["prometheusUrl"] == "http://192.168.137.19:9090"
    assert run.outputs["alertmanagerUrl"] == "http://192.168.137.19:9093"
    assert run.outputs["backupRepository"]["host"] == "backup"


def test_prod_stack_has_one_provider_network_and_base_image_per_hypervisor() -> None:
    run = run_program("prod")
    run.assert_ran()
    config = load_stack_config("prod")
    providers = run.of_type("pulumi:providers:libvirt")
    # One hypervisor per database node, and one for the backup repository host.
    assert sorted(p.plain("uri") for p in providers) == sorted(n.libvirt_uri for n in config.all_hosts)
    assert count(run, f"{LIBVIRT}volume:Volume") == 8
    clusters = [n for n in run.of_type(f"{LIBVIRT}network:Network") if n.plain("mode") == "bridge"]
    assert len(clusters) == 4 and {c.plain("bridge") for c in clusters} == {"br-pgha"}
    provider_of_uri = {p.plain("uri"): p.urn for p in providers}
    for node in config.nodes:
        domain = run.named(f"infra-{node.name}-domain")
        assert domain.provider.startswith(provider_of_uri[node.libvirt_uri] + "::")
        assert domain.plain("memory") == 8192


def test_secrets_stay_secret() -> None:
    password = "Sup3r-Secret-Postgres-PW"
    run = run_program("dev", secrets={"postgresPassword": password})
    run.assert_ran()
    commands = run.of_type(COMMAND)
    assert commands
    secret_steps = 0
    for cmd in commands:
        assert cmd.is_secret("connection"), f"{cmd.name}: connection (private key) not secret"
        for field in ("create", "update", "delete"):
            text = unwrap(cmd.inputs.get(field)) or ""
            assert password not in text and "generated-" not in text, f"{cmd.name}.{field} carries a secret"
        stdin = cmd.plain("stdin") or ""
        if password in stdin or "generated-" in stdin or "OPENSSH PRIVATE KEY" in stdin:
            assert cmd.is_secret("stdin"), f"{cmd.name}: stdin carries a secret in clear"
            assert set(cmd.additional_secret_outputs) >= {"stdout", "stderr"}
            secret_steps += 1
    assert secret_steps >= 3, "expected several steps that carry secrets (passwords, keys)"
    assert "connectionString" in run.secret_outputs
    assert password in run.outputs["connectionString"]
    assert run.outputs["connectionString"].endswith("@192.168.137.150:9999/postgres")
    assert "connectionStringMultiHost" in run.secret_outputs
    multi = run.outputs["connectionStringMultiHost"]
    assert password in multi and "tcp_user_timeout=3000" in multi
    assert "@192.168.137.11:9999,192.168.137.12:9999,192.168.137.13:9999/postgres?" in multi, multi


def test_generated_passwords_when_none_configured() -> None:
    run = run_program("dev")
    run.assert_ran()
    generated = {r.name for r in run.of_type("random:index/randomPassword:RandomPassword")}
    assert {"credentials-postgres", "credentials-replication", "credentials-pgpool", "credentials-pcp"} <= generated
    assert count(run, "tls:index/privateKey:PrivateKey") == 1
    assert run.named("credentials-postgres-ssh").plain("algorithm") == "ED25519"


def test_existing_hosts_mode_creates_no_vm_and_connects_to_the_listed_hosts(tmp_path) -> None:
    key = tmp_path / "admin_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nlab\n-----END OPENSSH PRIVATE KEY-----\n")
    # No sshPrivateKey secret: the key must come from existingHosts.sshPrivateKeyPath.
    run = run_program(
        "lab",
        overrides={"existingHosts": {"sshUser": "admin", "sshPrivateKeyPath": str(key)}},
        secrets={"sshPrivateKey": ""},
    )
    run.assert_ran()
    for command in run.of_type(COMMAND):
        assert command.is_secret("connection")
        assert unwrap(command.inputs["connection"])["privateKey"] == key.read_text()
    assert not [r for r in run.registrations if r.type.startswith(LIBVIRT) or "libvirt" in r.type]
    hosts = {unwrap(c.inputs["connection"])["host"] for c in run.of_type(COMMAND)}
    assert hosts == {"10.213.8.11", "10.213.8.12", "10.213.8.13", "10.213.8.19"}  # .19: the backup repository
    users = {unwrap(c.inputs["connection"])["user"] for c in run.of_type(COMMAND)}
    assert users == {"admin"}


def _fails_before_any_resource(run: ProgramRun, *fragments: str) -> None:
    assert isinstance(run.error, ConfigError), f"expected a ConfigError, got {run.error!r}"
    for fragment in fragments:
        assert fragment in str(run.error), str(run.error)
    created = [r for r in run.registrations if r.custom]
    assert not created, f"resources were registered before the error: {[r.name for r in created]}"


def test_bad_vip_fails_before_any_resource() -> None:
    _fails_before_any_resource(run_program("dev", overrides={"vip": "10.1.1.1"}), "pgpool-ha:vip:", "outside subnet")


def test_clear_text_password_is_refused() -> None:
    run = run_program("dev", overrides={"postgresPassword": "in-clear"})
    _fails_before_any_resource(run, "pgpool-ha:postgresPassword:", "clear text")


def test_unknown_key_is_refused() -> None:
    _fails_before_any_resource(run_program("dev", overrides={"vipAdress": "1.2.3.4"}), "pgpool-ha:vipAdress:")


def test_missing_admin_private_key_is_reported() -> None:
    run = run_program("dev", secrets={"sshPrivateKey": ""})
    _fails_before_any_resource(run, "pgpool-ha:sshPrivateKey:")


def test_provisioning_order_in_the_resource_graph() -> None:
    run = run_program("dev")
    run.assert_ran()
    commands = {c.name: c for c in run.of_type(COMMAND)}
    bootstrap = commands["server1-primary-bootstrap"]
    for standby in ("server2", "server3"):
        assert bootstrap.urn in commands[f"{standby}-standby-clone"].dependencies
    for node in ("server1", "server2", "server3"):
        service = commands[f"{node}-pgpool-service"]
        files = [c for name, c in commands.items() if name.startswith(f"{node}-file-")]
        assert len(files) >= 20
        missing = [f.name for f in files if f.urn not in service.dependencies]
        assert not missing, f"{node}: pgpool starts before {missing}"
        # Nothing runs on a node before its VM exists.
        domain = run.named(f"infra-{node}-domain")
        assert domain.urn in commands[f"{node}-packages"].dependencies


def test_clear_content_does_not_depend_on_any_secret() -> None:
    """database.py renders non-secret stdin with placeholders so that previews show it: prove that is safe."""
    from components.plan import provisioning_plan
    from components.secrets import ClusterSecrets

    first = ClusterSecrets(*(f"first-{name}" for name in ClusterSecrets.field_names()))
    second = ClusterSecrets(*(f"second-{name}" for name in ClusterSecrets.field_names()))
    checked = 0
    for stack in ("dev", "prod", "lab"):
        for step in provisioning_plan(load_stack_config(stack)):
            if step.stdin is None:
                continue
            if step.secret:
                assert step.stdin(first) != step.stdin(second), f"{step.ref} is marked secret but uses no secret"
            else:
                assert step.stdin(first) == step.stdin(second), f"{step.ref} uses a secret but is not marked secret"
                checked += 1
    assert checked > 30


VMLAB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQ1mAzHjPIbt9+FTrM1CUXRq51X36r2GE4ec8kPaL8t lab"
MIRROR_KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n"


def test_vmlab_stack_limits_the_tcg_cache_and_installs_from_the_mirror() -> None:
    run = run_program(
        "vmlab",
        overrides={"sshPublicKeys": [VMLAB_KEY], "packageMirror": {"url": "http://10.213.17.1:8081/", "suite": "./",
                                                                     "publicKey": MIRROR_KEY}},
    )  # fmt: skip
    run.assert_ran()
    domains = run.of_type(f"{LIBVIRT}domain:Domain")
    assert len(domains) == 3
    for domain in domains:
        assert domain.plain("type") == "qemu" and domain.plain("vcpu") == 1 and domain.plain("memory") == 1024
        xslt = domain.plain("xml")["xslt"]
        assert '<tb-cache unit="MiB">128</tb-cache>' in xslt and "/domain/features" in xslt
    base = run.named("infra-hv0-image-volume")
    assert base.plain("source") == "/var/lib/pgha-vmlab/image/base.qcow2" and base.plain("pool") == "pghavm"
    seed = run.of_type(f"{LIBVIRT}cloudInitDisk:CloudInitDisk")[0]
    user_data = yaml.safe_load(seed.plain("userData"))
    assert user_data["apt"]["preserve_sources_list"] is False
    files = {f["path"]: f["content"] for f in user_data["write_files"]}
    assert files["/etc/apt/sources.list.d/pgha-mirror.list"].strip() == (
        "deb [signed-by=/etc/apt/keyrings/pgha-mirror.asc] http://10.213.17.1:8081/ ./"
    )
    assert files["/etc/apt/keyrings/pgha-mirror.asc"] == MIRROR_KEY
    packages = next(r for r in run.of_type("command:remote:Command") if r.name == "server1-packages")
    create = packages.plain("create")
    assert "Dir::Etc::SourceList=$mirror_list" in create and "/etc/apt/keyrings/pgha-mirror.asc" in create


def test_pgpool_exporter_and_dashboard_are_uploaded_then_installed() -> None:
    run = run_program("dev")
    run.assert_ran()
    config = load_stack_config("dev")
    commands = {c.name: c for c in run.of_type(COMMAND)}
    copies = {c.name: c for c in run.of_type("command:remote:CopyToRemote")}
    wanted = {
        **{f"{n.name}-pgpool2-exporter-binary": config.monitoring.pgpool_exporter_binary for n in config.nodes},
        "backup-grafana-dashboard": config.monitoring.grafana_dashboard,
    }
    assert set(copies) == {f"{name}-copy" for name in wanted}
    for name, source in wanted.items():
        copy, install = copies[f"{name}-copy"], commands[name]
        assert copy.plain("source")["path"] == source
        assert copy.plain("remotePath") == f"pgha-uploads/{Path(source).name}"
        assert run.by_urn(copy.parent).type in ("pgha:database:DatabaseNode", "pgha:backup:BackupRepository")
        # The install step runs after the copy, checks the file against the sha256 of the local file (its stdin,
        # in clear: a binary's digest is no secret), and installs it root-owned.
        assert copy.urn in install.dependencies
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        assert install.plain("stdin") == digest + "\n" and not install.is_secret("stdin")
        assert "install-upload" in install.plain("create")
    for node in config.nodes:
        monitoring = commands[f"{node.name}-monitoring-services"]
        assert commands[f"{node.name}-pgpool2-exporter-binary"].urn in monitoring.dependencies
        assert "pgha-pgpool2-exporter=" in monitoring.plain("create")


def test_missing_pgpool_exporter_binary_fails_before_any_resource(tmp_path: Path) -> None:
    run = run_program("dev", overrides={"monitoring": {"pgpoolExporterBinary": str(tmp_path / "nothing")}})
    _fails_before_any_resource(run, "pgpool-ha:monitoring.pgpoolExporterBinary:", "make engine")


def test_an_interrupted_program_ends_with_the_reported_code_and_no_traceback() -> None:
    """The language host's SIGINT (the engine stopped the deployment) ends the program at once: the runtime's
    "already reported" code, nothing on stderr. Without the handler the same signal prints a KeyboardInterrupt."""
    import subprocess
    import sys

    from components.interrupt import ALREADY_REPORTED

    body = "import os, signal, time\n{install}os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(10)\n"
    root = Path(__file__).resolve().parents[2]
    install = "from components.interrupt import end_quietly_when_interrupted\nassert end_quietly_when_interrupted()\n"
    quiet = subprocess.run([sys.executable, "-c", body.format(install=install)], cwd=root, capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert (quiet.returncode, quiet.stderr) == (ALREADY_REPORTED, "")
    default = subprocess.run([sys.executable, "-c", body.format(install="")], cwd=root, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert "KeyboardInterrupt" in default.stderr


def test_every_host_has_a_drift_resource_whose_counters_are_in_its_repairing_steps_updates() -> None:
    """One ServerDrift per host, its private key secret; the steps that carry drift keys end their update command
    with the counters (an update, never a replace: no `triggers`); the others do not."""
    run = run_program("dev")
    run.assert_ran()
    drift = {r.name: r for r in run.of_type("pulumi-python:dynamic:Resource")}
    assert set(drift) == {"server1-drift", "server2-drift", "server3-drift", "backup-drift"}, set(drift)
    for resource in drift.values():
        assert resource.is_secret("private_key"), f"{resource.name}: private key not secret"
        # A refresh's read returns the key as an output: the engine must keep that output secret too.
        assert "private_key" in resource.additional_secret_outputs, resource.additional_secret_outputs
        assert "drift-observe" in resource.plain("observe")
    commands = {c.name: c for c in run.of_type(COMMAND)}
    assert all(c.inputs.get("triggers") is None for c in commands.values())
    triggered = {name for name, c in commands.items() if "# drift counters: " in (c.plain("update") or "")}
    assert "server1-file-etc-pgpool2-pool_hbaconf" in triggered
    assert "server1-pgpool-service" in triggered
    assert "server1-packages" not in triggered
