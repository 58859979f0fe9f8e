"""Highly available PostgreSQL behind pgpool-II: read the stack config, build the components, export the endpoints."""

import pulumi

from components.credentials import Credentials
from components.database import HostAccess, PostgresCluster
from components.endpoints import multi_host_uri, vip_uri
from components.infrastructure import Infrastructure
from components.interrupt import end_quietly_when_interrupted
from components.pulumi_config import admin_private_key, read_stack_config
from components.render import MONITORING_VALUES

# A refusal's message is the last thing printed, not a KeyboardInterrupt traceback after it.
end_quietly_when_interrupted()

# Every check runs here, before any resource exists: bad input stops the program with the key named.
config = read_stack_config()
private_key = admin_private_key(config)

if config.mode == "libvirt":
    infrastructure = Infrastructure("infra", config)
    hosts = {
        node.name: HostAccess(
            node=node,
            host=node.connect_host,
            user=config.admin_user,
            port=22,
            private_key=private_key,
            ready=[infrastructure.machines[node.name].domain],
        )
        for node in config.all_hosts
    }
else:
    hosts = {
        node.name: HostAccess(
            node=node,
            host=node.connect_host,
            user=config.existing_hosts.ssh_user,
            port=config.existing_hosts.ssh_port,
            private_key=private_key,
        )
        for node in config.all_hosts
    }

credentials = Credentials("credentials")
cluster = PostgresCluster("cluster", config, hosts, credentials.values)

pulumi.export("vip", str(config.vip))
pulumi.export("nodeAddresses", {node.name: str(node.address) for node in config.nodes})
pulumi.export("pgpoolEndpoint", config.pgpool_endpoint)
if config.backup is not None:
    pulumi.export(
        "backupRepository",
        {
            "host": config.backup.host.name,
            "address": str(config.backup.host.address),
            "stanza": config.stanza,
            "restore": "sudo pgha-restore --time '...' | --latest",
        },
    )
if config.monitoring_enabled and config.backup is not None:
    monitor = config.backup.host.address
    pulumi.export("prometheusUrl", f"http://{monitor}:{MONITORING_VALUES['prometheus_port']}")
    pulumi.export("alertmanagerUrl", f"http://{monitor}:{MONITORING_VALUES['alertmanager_port']}")
pulumi.export(
    "connectionString",
    pulumi.Output.secret(credentials.postgres_password.apply(lambda password: vip_uri(config, "postgres", password))),
)
# For clients that should not wait for the VIP to move: every node's pgpool, the first that takes a write wins.
pulumi.export(
    "connectionStringMultiHost",
    pulumi.Output.secret(
        credentials.postgres_password.apply(lambda password: multi_host_uri(config, "postgres", password))
    ),
)
