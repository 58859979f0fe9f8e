"""Reading the stack configuration through the Pulumi engine: the same validation as components.stack, plus the
checks only the engine can make (which values were stored encrypted)."""

from __future__ import annotations

from pathlib import Path

import pulumi

from .config import PASSWORD_KEYS, PROJECT, ClusterConfig, ConfigError, parse_config
from .stack import declared_keys, is_unset

SECRET_KEYS = (*PASSWORD_KEYS, "sshPrivateKey")


class StackConfigError(ConfigError, pulumi.RunError):
    """A ConfigError the engine reports as a plain message (RunError), without a Python traceback."""


def read_stack_config() -> ClusterConfig:
    """Validate the stack's config into a ClusterConfig, or raise ConfigError naming every bad key."""
    stack = pulumi.Config(PROJECT)
    declared = declared_keys()
    present = _present_keys()
    problems = [
        f"{PROJECT}:{key}: not a key this program reads (see Pulumi.yaml)" for key in sorted(present - set(declared))
    ]
    # A secret given in clear text must fail even though the engine would happily read it.
    problems += [
        f"{PROJECT}:{key}: given in clear text; set it with `pulumi config set --secret {key}` "
        "or leave it out to have a random one generated"
        for key in SECRET_KEYS
        if key in present and not pulumi.runtime.is_config_secret(f"{PROJECT}:{key}") and stack.get(key)
    ]
    raw: dict[str, object] = {}
    for key, declaration in declared.items():
        if key in SECRET_KEYS or key not in present:
            continue
        # Strings arrive as they are; arrays and objects (keys declared without a scalar type) as JSON.
        value = stack.get(key) if declaration.get("type") == "string" else stack.get_object(key)
        if not is_unset(value):
            raw[key] = value
    cluster: ClusterConfig | None = None
    try:
        cluster = parse_config(raw)
    except ConfigError as error:
        problems += str(error).splitlines()[1:]
    if cluster is not None:
        problems += missing_uploads(cluster)
    if problems or cluster is None:
        raise StackConfigError("invalid stack configuration:\n  " + "\n  ".join(p.strip() for p in problems))
    return cluster


def missing_uploads(config: ClusterConfig) -> list[str]:
    """Files `pulumi up` uploads from this machine that are not there, each naming its config key."""
    if not config.monitoring_enabled:
        return []
    wanted = {
        "monitoring.pgpoolExporterBinary": config.monitoring.pgpool_exporter_binary,
        "monitoring.grafanaDashboard": config.monitoring.grafana_dashboard,
    }
    return [
        f"{PROJECT}:{key}: no file {path} on this machine (`make engine` builds it: scripts/build-pgpool2-exporter.sh)"
        for key, path in wanted.items()
        if not Path(path).is_file()
    ]


def _present_keys() -> set[str]:
    """Bare keys of this project that the stack (or Pulumi.yaml's defaults) sets."""
    keys = set(pulumi.runtime.config.CONFIG.get()) | set(pulumi.runtime.get_config_env())
    return {key.split(":", 1)[1] for key in keys if key.startswith(f"{PROJECT}:")}


def optional_secret(key: str) -> pulumi.Output[str] | None:
    """A secret config value, or None when unset (empty)."""
    if not pulumi.Config(PROJECT).get(key):
        return None
    return pulumi.Config(PROJECT).require_secret(key)


def admin_private_key(config: ClusterConfig) -> pulumi.Output[str]:
    """The private key provisioning connects with: secret config `sshPrivateKey`, or existingHosts.sshPrivateKeyPath."""
    value = optional_secret("sshPrivateKey")
    if value is not None:
        return value
    path = config.existing_hosts.ssh_private_key_path if config.mode == "existing" else None
    if path:
        key_file = Path(path)
        if not key_file.is_file():
            raise StackConfigError(
                f"invalid stack configuration:\n  {PROJECT}:existingHosts.sshPrivateKeyPath: no file {path}"
            )
        return pulumi.Output.secret(key_file.read_text())
    raise StackConfigError(
        "invalid stack configuration:\n  "
        f"{PROJECT}:sshPrivateKey: provisioning needs the admin user's private key: "
        "`pulumi config set --secret sshPrivateKey < key`"
        + (" or existingHosts.sshPrivateKeyPath" if config.mode == "existing" else "")
    )
