"""The provisioning as data: an ordered list of Steps, each one idempotent shell command run over SSH.

Consumed by the Pulumi component (components/database.py: one remote.Command per Step), and by the render command
for review. Rules every step follows:
- the command runs as the admin user and escalates with `sudo -n`;
- no secret in a command string: secret content (files, SQL with passwords) comes on stdin;
- idempotent, with state checks (a node that already belongs to the cluster is never re-bootstrapped or re-cloned,
  whichever node is primary now) and one final line `changed: ...` / `unchanged: ...`;
- one step per file, so a changed setting touches that file's step and the service step only.

Reload vs restart: the pgpool-service step's command embeds fingerprints of pgpool's restart-only and reloadable
settings (components.render.service_fingerprints). When pgpool.conf changes, the command string changes, so Pulumi
runs `update` (no `triggers`, which would replace the resource and run its delete = stop pgpool). On the server the
step compares the fingerprints with the ones it applied last (/var/lib/pgha/pgpool.applied) and restarts, reloads,
or does nothing (a step the engine runs again after an interrupted `up` gets the same decision). Secret files are
handled the same way by the pgpool-secrets step, whose fingerprints come on stdin (a secret) instead of in the command.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from .config import ClusterConfig, Node
from .crypto import scram_salt, scram_sha256_verifier
from .paths import HOLD_CONF, MEMBERS_STATE, MONITORING_VALUES, REPOSITORY_PATH, REPOSITORY_USER, slot_name
from .render import ServerFile, render_node_files
from .secrets import ClusterSecrets
from .services import parse_settings, postgresql_restart_only, service_fingerprints


@dataclass(frozen=True)
class Upload:
    """A file of the machine running Pulumi that a step installs: the Pulumi component copies it over SFTP (a
    CopyToRemote resource, re-copied when its content changes) to `staged`, relative to the SSH user's home; the
    step's command checks its sha256 and installs it."""

    source: str  # path on the machine running Pulumi
    staged: str  # relative to the SSH user's home


@dataclass(frozen=True)
class Step:
    node: str  # node name it runs on
    name: str  # unique within the node; the Pulumi resource will be f"{node}-{name}"
    create: str  # full command line run over SSH by the admin user's shell (NO secret ever inside)
    update: str | None = None  # run instead of create when the step's inputs change (None: run create again)
    delete: str | None = None  # run on `pulumi destroy`
    stdin: Callable[[ClusterSecrets], str] | None = None  # content piped to the command (files, passwords)
    secret: bool = False  # stdin is derived from secrets: Pulumi wraps it as a secret, render shows placeholders
    after: tuple[str, ...] = ()  # dependencies, as "node/name"
    upload: Upload | None = None  # a local file copied to the node before the command runs

    @property
    def ref(self) -> str:
        return f"{self.node}/{self.name}"


def _sudo_script(name: str, script: str, *args: str) -> str:
    """`sudo -n bash -c '<script>' <name> <args>`: the script is code, never data; args are plain words."""
    body = "set -euo pipefail\n" + script.strip() + "\n"
    return " ".join(["sudo -n /bin/bash -c", shlex.quote(body), shlex.quote(f"pgha-{name}"), *map(shlex.quote, args)])


PASSWORDS = "/usr/local/lib/pgha/pgha-passwords"  # templates/usr/local/lib/pgha/pgha-passwords.j2
MEMBERS = "/usr/local/lib/pgha/pgha-members"  # templates/usr/local/lib/pgha/pgha-members.j2


# --- generic file writers ---------------------------------------------------------------------------------------
_PUT_FILE = r"""
dst=$1 mode=$2 owner=$3 validate=$4
dir=$(dirname "$dst")
[ -d "$dir" ] || install -d -m 0755 "$dir"
tmp=$(mktemp "$dir/.pgha-put.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
case "$validate" in
  visudo) visudo -cqf "$tmp" >/dev/null || { echo "failed: $dst does not pass visudo" >&2; exit 1; } ;;
  nft) nft -c -f "$tmp" || { echo "failed: $dst does not pass nft -c" >&2; exit 1; } ;;
esac
chmod "$mode" "$tmp"
chown "$owner" "$tmp"
if [ -f "$dst" ] && cmp -s "$tmp" "$dst" && [ "$(stat -c '%a %U:%G' "$dst")" = "${mode#0} $owner" ]; then
  echo "unchanged: $dst"
  exit 0
fi
mv -f "$tmp" "$dst"
trap - EXIT
echo "changed: $dst"
"""

_PUT_BLOCK = r"""
dst=$1
begin='# BEGIN pgha managed block'
end='# END pgha managed block'
new=$(mktemp)
trap 'rm -f "$new"' EXIT
{ echo "$begin"; cat; echo "$end"; [ -f "$dst" ] && sed "/^$begin\$/,/^$end\$/d" "$dst"; } >"$new"
if [ -f "$dst" ] && cmp -s "$new" "$dst"; then
  echo "unchanged: $dst (managed block)"
  exit 0
fi
# Rewrite in place: keeps the inode, mode and owner (/etc/hosts may be bind-mounted).
cat "$new" >"$dst"
echo "changed: $dst (managed block)"
"""


def _file_step_name(path: str) -> str:
    slug = path.strip("/").replace("/", "-").replace("@", "-").replace(".", "")
    return f"file-{slug}"


def put_file_command(file: ServerFile) -> str:
    if file.kind == "block":
        return _sudo_script("put-block", _PUT_BLOCK, file.path)
    return _sudo_script("put-file", _PUT_FILE, file.path, file.mode, f"{file.owner}:{file.group}", file.validate or "")


# --- steps -------------------------------------------------------------------------------------------------------
def provisioning_packages(config: ClusterConfig) -> list[str]:
    """Every package the packages step makes sure is installed (a package mirror must carry them and their
    dependencies)."""
    pg = config.postgresql.version
    packages = [
        f"postgresql-{pg}",
        f"postgresql-client-{pg}",
        "pgpool2",
        "libpgpool2",
        f"postgresql-{pg}-pgpool2",
        "iputils-arping",
        "sudo",
        "openssh-server",
        "openssh-client",
        "iproute2",
    ]
    if config.firewall.enabled:
        packages.append("nftables")
    if config.backup is not None:
        packages.append("pgbackrest")
    if config.monitoring_enabled:
        packages += ["prometheus-node-exporter", "prometheus-postgres-exporter"]
    return packages


def repository_packages(config: ClusterConfig) -> list[str]:
    """What the backup repository host needs: pgBackRest and ssh (no PostgreSQL server)."""
    packages = ["pgbackrest", "openssh-server", "openssh-client", *(["nftables"] if config.firewall.enabled else [])]
    if config.monitoring_enabled:
        packages += ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]
    return packages


def pinned_packages(config: ClusterConfig) -> list[str]:
    """`package=version` for every package whose exact version the stack config pins (postgresql / pgpool)."""
    pg = config.postgresql.version
    pins = []
    if config.postgresql.package_version:
        pins += [f"{p}={config.postgresql.package_version}" for p in (f"postgresql-{pg}", f"postgresql-client-{pg}")]
    if config.pgpool.package_version:
        pins += [f"{p}={config.pgpool.package_version}" for p in ("pgpool2", "libpgpool2", f"postgresql-{pg}-pgpool2")]
    return pins


def _mirror_script(config: ClusterConfig) -> str:
    """packageMirror: its apt source (and signing key) in place; APT_SOURCES makes apt use it alone."""
    mirror = config.package_mirror
    if mirror is None:
        return 'APT_SOURCES=""\nmirror_changed=no\n'
    key = ""
    if mirror.public_key and mirror.keyring:
        key = (
            f"install -d -m 0755 {shlex.quote(str(PurePosixPath(mirror.keyring).parent))}\n"
            "key=$(mktemp)\n"
            f"printf '%s' {shlex.quote(mirror.public_key)} >\"$key\"\n"
            f'if ! cmp -s "$key" {mirror.keyring}; then '
            f'install -m 0644 "$key" {mirror.keyring}; mirror_changed=yes; fi\n'
            'rm -f "$key"\n'
        )
    return rf"""
mirror_list=/etc/apt/sources.list.d/pgha-mirror.list
mirror_changed=no
{key}if [ "$(cat "$mirror_list" 2>/dev/null)" != {shlex.quote(mirror.source_line)} ]; then
  echo {shlex.quote(mirror.source_line)} >"$mirror_list"; mirror_changed=yes
fi
# apt reads the mirror's source only (the distribution's may be unreachable from an air-gapped network).
APT_SOURCES="-o Dir::Etc::SourceList=$mirror_list -o Dir::Etc::SourceParts=/nonexistent/pgha"
"""


def _packages_script(config: ClusterConfig) -> str:
    packages = provisioning_packages(config)
    source = config.package_source
    return (
        _mirror_script(config)
        + rf"""
want={shlex.quote(config.pgpool.version)}
package_source={source}
missing=""
for p in {" ".join(packages)}; do
  dpkg-query -W -f='${{Status}}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
did="all packages installed"
if [ -n "$missing" ]; then
  source={source}
  case "$source" in
    preinstalled)
      echo "failed: packageSource preinstalled but missing:$missing" >&2; exit 1 ;;
    pgdg)
      export DEBIAN_FRONTEND=noninteractive
      if [ ! -f /etc/apt/sources.list.d/pgdg.list ] && [ ! -f /etc/apt/sources.list.d/pgdg.sources ]; then
        apt-get -q update >/dev/null
        apt-get -q -y install postgresql-common ca-certificates >/dev/null
        /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y >/dev/null
      fi ;;
  esac
  export DEBIAN_FRONTEND=noninteractive
  # A new VM's sshd answers before cloud-init's own apt run (package_update) ends: let that finish first, and wait
  # for any other holder of the dpkg lock instead of failing.
  if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null 2>&1 || true; fi
  # shellcheck disable=SC2086
  apt-get -q -o DPkg::Lock::Timeout=600 $APT_SOURCES update >/dev/null
  # shellcheck disable=SC2086
  apt-get -q -y -o DPkg::Lock::Timeout=600 $APT_SOURCES install $missing >/dev/null
  did="installed:$missing"
fi
# Pinned versions (postgresql.packageVersion, pgpool.packageVersion): installed without stopping or starting any
# service. dpkg's maintainer scripts would restart PostgreSQL on every node at once; policy-rc.d (101: "not now")
# stops them, and the postgresql-restart / postgresql-switchover steps (and pgpool-service) restart one node at a time.
pins="{" ".join(pinned_packages(config))}"
outdated=""
for spec in $pins; do
  installed=$(dpkg-query -W -f='${{Version}}' "${{spec%%=*}}" 2>/dev/null || true)
  if [ "$installed" != "${{spec#*=}}" ]; then outdated="$outdated $spec"; fi
done
if [ -n "$outdated" ]; then
  if [ "$package_source" = preinstalled ]; then
    echo "failed: packageSource preinstalled, but these pinned versions are not installed:$outdated" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then mv -f "$policy" "$policy.pgha-saved"; fi
  restore_policy() {{ rm -f "$policy"; if [ -e "$policy.pgha-saved" ]; then mv -f "$policy.pgha-saved" "$policy"; fi; }}
  trap restore_policy EXIT
  printf '#!/bin/sh\n# pgha: package upgrade; services restart one node at a time afterwards\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  # shellcheck disable=SC2086
  apt-get -q -o DPkg::Lock::Timeout=600 $APT_SOURCES update >/dev/null
  # shellcheck disable=SC2086
  apt-get -q -y -o DPkg::Lock::Timeout=600 $APT_SOURCES install --allow-downgrades $outdated >/dev/null
  restore_policy
  trap - EXIT
  if [ "$did" = "all packages installed" ]; then did="pinned versions installed:$outdated"
  else did="$did, pinned versions installed:$outdated"; fi
fi
version=$(dpkg-query -W -f='${{Version}}' pgpool2)
have=$(echo "$version" | sed -E 's/^([0-9]+:)?([0-9]+\.[0-9]+).*/\2/')
if [ "$have" != "$want" ]; then
  echo "failed: pgpool2 $version is installed but the stack config says pgpool.version $want" >&2
  exit 1
fi
if [ -n "$APT_SOURCES" ] && [ "$mirror_changed" = yes ]; then did="$did, packageMirror source written"; fi
if [ "$did" = "all packages installed" ]; then echo "unchanged: $did (pgpool2 $version)"
else echo "changed: $did (pgpool2 $version)"; fi
"""
    )


def _install_dirs(dirs: list[tuple[str, str, str]]) -> str:
    """Shell lines that create each (directory, mode, owner:group) or fix its mode and owner; they append what they
    changed to $changed."""
    lines = " ".join(f"{d}:{m}:{o}" for d, m, o in dirs)
    return rf"""for spec in {lines}; do
  d=${{spec%%:*}}; rest=${{spec#*:}}; m=${{rest%%:*}}; o=${{rest#*:}}
  if [ -d "$d" ] && [ "$(stat -c '%a %U:%G' "$d")" = "${{m#0}} $o" ]; then continue; fi
  install -d -m "$m" -o "${{o%%:*}}" -g "${{o#*:}}" "$d"
  changed="$changed $d"
done"""


def _dirs_script(config: ClusterConfig) -> str:
    dirs = [
        ("/var/lib/pgha", "0755", "root:root"),
        ("/var/log/pgpool", "0750", "postgres:postgres"),
        ("/var/lib/pgpool", "0700", "postgres:postgres"),
        ("/var/lib/postgresql/.ssh", "0700", "postgres:postgres"),
        ("/etc/pgpool2/scripts", "0750", "root:postgres"),
        ("/usr/local/lib/pgha", "0755", "root:root"),
        ("/etc/systemd/system/pgpool2.service.d", "0755", "root:root"),
        (f"/etc/systemd/system/postgresql@{config.postgresql.version}-main.service.d", "0755", "root:root"),
    ]
    if config.backup is not None:  # pgBackRest's log and the async archive's spool, written by archive_command
        dirs += [
            ("/var/log/pgbackrest", "0750", "postgres:postgres"),
            ("/var/spool/pgbackrest", "0750", "postgres:postgres"),
        ]
    return rf"""
changed=""
{_install_dirs(dirs)}
# pgpool.conf includes the hold file (empty at rest, see passwords-hold): it must exist before pgpool starts.
if [ ! -f {HOLD_CONF} ]; then
  install -m 0640 -o root -g postgres /dev/null {HOLD_CONF}
  changed="$changed {HOLD_CONF}"
fi
if [ -n "$changed" ]; then echo "changed: directories$changed"; else echo "unchanged: directories"; fi
"""


def _known_hosts_script(config: ClusterConfig, repository: bool = False) -> str:
    """Pin the host keys this host's ssh user needs, scanned over the cluster network now: postgres on a database
    node (every node, and the repository host), pgbackrest on the repository host (every database node)."""
    if repository:
        hosts, dst, owner = config.nodes, f"/home/{REPOSITORY_USER}/.ssh/known_hosts", REPOSITORY_USER
    else:
        hosts, dst, owner = config.all_hosts, "/var/lib/postgresql/.ssh/known_hosts", "postgres"
    pairs = " ".join(f"{n.name}={n.address}" for n in hosts)
    return rf"""
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for pair in {pairs}; do
  name=${{pair%%=*}} addr=${{pair#*=}}
  # Bounded retries: while the engine provisions, sshd drops unauthenticated connections beyond MaxStartups.
  keys=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    keys=$(ssh-keyscan -T 15 "$addr" 2>/dev/null | grep -v '^#' | sort || true)
    [ -n "$keys" ] && break
    sleep 2
  done
  if [ -z "$keys" ]; then echo "failed: no ssh host key from $name ($addr) after 10 tries" >&2; exit 1; fi
  echo "$keys" | awk -v n="$name,$addr" '{{ $1 = n; print }}' >>"$out"
done
dst={dst}
if [ -f "$dst" ] && cmp -s "$out" "$dst"; then echo "unchanged: $dst"; exit 0; fi
install -m 0644 -o {owner} -g {owner} "$out" "$dst"
echo "changed: $dst"
"""


def _pg_common(config: ClusterConfig) -> str:
    pg = config.postgresql
    return rf"""
# shellcheck disable=SC2034  # not every step uses every setting
{{
PASSWORDS={PASSWORDS}
PG={pg.version}
UNIT=postgresql@{pg.version}-main
MEMBER=/var/lib/postgresql/{pg.version}/pgha-member
PGDATA={config.pg_data_directory}
}}
# Provisioning's own writes (roles, extension, slots) commit locally: with synchronous replication on, a fresh
# primary has no standby yet, and a commit waiting for one would hang the first `up` forever.
psql_local() {{
  runuser -u postgres -- env PGOPTIONS='-c synchronous_commit=local' psql -XAtq -p {config.postgresql.port} \
    -v ON_ERROR_STOP=1 "$@"
}}
running() {{ pg_ctlcluster "$PG" main status >/dev/null 2>&1; }}
"""


def _pg_config_script(config: ClusterConfig, fingerprint: str) -> str:
    return (
        _pg_common(config)
        + rf"""
# config fingerprint {fingerprint}: changes when conf.d / pg_hba change, so Pulumi runs this step again.
did=""
if [ "$(systemctl show -p NeedDaemonReload --value "$UNIT")" = yes ]; then
  systemctl daemon-reload; did="daemon-reload"
fi
if running; then
  settings_sql="SELECT md5(string_agg(name || '=' || setting, ',' ORDER BY name)) FROM pg_settings"
  hba_sql="SELECT md5(string_agg(line_number || ':' || type || coalesce(address, ''), ',')) FROM pg_hba_file_rules"
  before=$(psql_local -c "$settings_sql")
  hba_before=$(psql_local -c "$hba_sql")
  systemctl reload "$UNIT"
  sleep 1
  pending=$(psql_local -c "SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart")
  if [ -n "$pending" ] && [ -f "$MEMBER" ]; then
    # A member of a running cluster: restarting every node at once here would fail clients over and over. The
    # postgresql-restart steps (standbys, one at a time) and postgresql-switchover steps (the primary) apply it.
    did="$did reloaded; restart-only settings pending ($pending): applied one node at a time later in this up"
  elif [ -n "$pending" ]; then
    systemctl restart "$UNIT"
    did="$did restarted ($pending)"
  else
    after=$(psql_local -c "$settings_sql")
    hba_after=$(psql_local -c "$hba_sql")
    if [ "$before" != "$after" ] || [ "$hba_before" != "$hba_after" ]; then did="$did reloaded"; fi
  fi
elif [ -f "$MEMBER" ]; then
  # A member whose PostgreSQL is down stays down: pgpool owns its state (detached; online recovery brings it back).
  echo "unchanged: PostgreSQL $PG is down on this cluster member; left to pgpool (pcp_recovery_node)"
  exit 0
else
  systemctl start "$UNIT"
  did="$did started"
fi
for _ in $(seq 1 30); do pg_isready -q -p {config.postgresql.port} && break; sleep 1; done
if [ -n "$did" ]; then echo "changed: PostgreSQL $PG:$did"
else echo "unchanged: PostgreSQL $PG configuration in force"; fi
"""
    )


def _bootstrap_sql(config: ClusterConfig) -> Callable[[ClusterSecrets], str]:
    pg = config.postgresql

    def verifier(role: str, password: str, key: str) -> str:
        # SCRAM verifiers, not the passwords: the plain text never reaches the server (see scram_sha256_verifier).
        return scram_sha256_verifier(password, scram_salt(key, role))

    def sql(secrets: ClusterSecrets) -> str:
        key = secrets.pgpool_key
        return "\n".join(
            [
                "SET log_statement = 'none';",
                f"SELECT 'CREATE ROLE \"{pg.replication_user}\"' WHERE NOT EXISTS "
                f"(SELECT 1 FROM pg_roles WHERE rolname = '{pg.replication_user}') \\gexec",
                f"SELECT 'CREATE ROLE \"{pg.check_user}\"' WHERE NOT EXISTS "
                f"(SELECT 1 FROM pg_roles WHERE rolname = '{pg.check_user}') \\gexec",
                f"SELECT 'CREATE ROLE \"{pg.recovery_user}\"' WHERE NOT EXISTS "
                f"(SELECT 1 FROM pg_roles WHERE rolname = '{pg.recovery_user}') \\gexec",
                f'ALTER ROLE "{pg.replication_user}" WITH LOGIN REPLICATION PASSWORD '
                f"'{verifier(pg.replication_user, secrets.replication_password, key)}';",
                f'ALTER ROLE "{pg.check_user}" WITH LOGIN PASSWORD '
                f"'{verifier(pg.check_user, secrets.pgpool_password, key)}';",
                f'ALTER ROLE "{pg.recovery_user}" WITH LOGIN SUPERUSER PASSWORD '
                f"'{verifier(pg.recovery_user, secrets.postgres_password, key)}';",
                f'GRANT pg_monitor TO "{pg.check_user}";',
                "",
            ]
        )

    return sql


def _bootstrap_script(config: ClusterConfig, node: Node) -> str:
    slots = " ".join(slot_name(n.name) for n in config.nodes if n != node)
    return (
        _pg_common(config)
        + rf"""
sql=$(cat)   # roles and passwords (stdin: never in argv or environment)
if ! running; then echo "failed: PostgreSQL $PG is not running on the primary" >&2; exit 1; fi
if [ "$(psql_local -c 'SELECT pg_is_in_recovery()')" = t ]; then
  echo "unchanged: this node is a standby now (failover happened); the primary holds the roles and slots"
  exit 0
fi
user_dbs="SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')"
if [ ! -f "$MEMBER" ] && [ "$(psql_local -c "$user_dbs")" != 0 ]; then
  echo "failed: this PostgreSQL holds databases but is no cluster member: refusing to take it over" >&2
  exit 1
fi
did=""
# The roles and their first passwords. On a member a password change is the passwords-* steps' job, which pause
# pgpool's health checks first and run on whichever node is primary now.
if [ ! -f "$MEMBER" ] && [ -n "$("$PASSWORDS" refused 127.0.0.1)" ]; then
  printf '%s\n' "$sql" | psql_local -d postgres >/dev/null
  did="$did roles"
fi
if [ "$(psql_local -d template1 -c "SELECT count(*) FROM pg_extension WHERE extname = 'pgpool_recovery'")" = 0 ]; then
  psql_local -d template1 -c 'CREATE EXTENSION pgpool_recovery' >/dev/null
  did="$did pgpool_recovery"
fi
for slot in {slots}; do
  if [ "$(psql_local -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'")" = 0 ]; then
    psql_local -c "SELECT pg_create_physical_replication_slot('$slot')" >/dev/null
    did="$did slot:$slot"
  fi
done
if [ ! -f "$MEMBER" ]; then install -m 0644 -o postgres -g postgres /dev/null "$MEMBER"; did="$did member"; fi
if [ -n "$did" ]; then echo "changed: primary bootstrap:$did"
else echo "unchanged: primary bootstrap (roles, pgpool_recovery, slots)"; fi
"""
    )


def _clone_script(config: ClusterConfig, node: Node) -> str:
    pg = config.postgresql
    names = " ".join(n.name for n in config.nodes if n != node)
    return (
        _pg_common(config)
        + rf"""
if [ -f "$MEMBER" ]; then
  echo "unchanged: {node.name} already belongs to the cluster (never re-cloned here; pgpool handles its state)"
  exit 0
fi
user_dbs="SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')"
if running && [ "$(psql_local -c "$user_dbs")" != 0 ]; then
  echo "failed: this PostgreSQL holds databases but is no cluster member: refusing to replace it" >&2
  exit 1
fi
# The current primary: whichever member answers as primary (the first primary, or another after a failover).
primary=""
for n in {names}; do
  conninfo="host=$n port={pg.port} user={pg.check_user} dbname=postgres connect_timeout=5"
  if [ "$(runuser -u postgres -- psql -XAtqw "$conninfo" \
        -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then primary=$n; break; fi
done
if [ -z "$primary" ]; then echo "failed: no primary found among: {names}" >&2; exit 1; fi
runuser -u postgres -- /usr/local/lib/pgha/pg-make-standby basebackup {node.name} "$primary" {pg.port} >/dev/null
systemctl start "$UNIT"
for _ in $(seq 1 60); do pg_isready -q -p {pg.port} && break; sleep 1; done
echo "changed: {node.name} cloned from $primary with pg_basebackup (slot {slot_name(node.name)}), streaming"
"""
    )


def _firewall_script(config: ClusterConfig) -> str:
    if not config.firewall.enabled:
        return r"""
if command -v nft >/dev/null && nft list table inet pgha >/dev/null 2>&1; then
  nft delete table inet pgha
  echo "changed: firewall table inet pgha removed (firewall.enabled is false)"
else
  echo "unchanged: firewall disabled"
fi
"""
    return r"""
state=/var/lib/pgha/nftables.applied
want=$(sha256sum /etc/nftables.conf | cut -d' ' -f1)
did=""
if ! nft list table inet pgha >/dev/null 2>&1 || [ "$(cat "$state" 2>/dev/null)" != "$want" ]; then
  nft -f /etc/nftables.conf
  echo "$want" >"$state"
  did=" loaded"
fi
if ! systemctl is-enabled --quiet nftables; then systemctl enable --quiet nftables; did="$did enabled"; fi
if [ -n "$did" ]; then echo "changed: firewall$did"; else echo "unchanged: firewall rules in force"; fi
"""


_KERNEL_SETTINGS = r"""
file=/etc/sysctl.d/60-pgha.conf
changed="" pending=""
while IFS='=' read -r key value; do
  key=$(echo "$key" | xargs) value=$(echo "$value" | xargs)
  case "$key" in ''|'#'*) continue ;; esac
  path=/proc/sys/${key//.//}
  [ "$(cat "$path")" = "$value" ] && continue
  if sysctl -q -w "$key=$value" 2>/dev/null; then changed="$changed $key=$value"
  else pending="$pending $key=$value"; fi
done <"$file"
if [ -n "$pending" ]; then
  # A container whose /proc/sys is read-only: the host (or whoever manages its network namespace) must set these.
  echo "WARNING: kernel settings not in force and not settable here (read-only /proc/sys?):$pending" >&2
fi
if [ -n "$changed" ]; then echo "changed: kernel settings$changed"
elif [ -n "$pending" ]; then echo "unchanged: kernel settings NOT in force:$pending (set them on the host)"
else echo "unchanged: kernel settings in force"; fi
"""


# --- the backup repository host (pgBackRest) ---------------------------------------------------------------------
def _repository_packages_script(config: ClusterConfig) -> str:
    packages = " ".join(repository_packages(config))
    return (
        _mirror_script(config)
        + rf"""
package_source={config.package_source}
missing=""
for p in {packages}; do
  dpkg-query -W -f='${{Status}}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$package_source" = preinstalled ]; then
    echo "failed: packageSource preinstalled but missing:$missing" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null 2>&1 || true; fi
  # shellcheck disable=SC2086
  apt-get -q -o DPkg::Lock::Timeout=600 $APT_SOURCES update >/dev/null
  # shellcheck disable=SC2086
  apt-get -q -y -o DPkg::Lock::Timeout=600 $APT_SOURCES install $missing >/dev/null
  echo "changed: installed:$missing (pgbackrest $(dpkg-query -W -f='${{Version}}' pgbackrest))"
  if [ "$mirror_changed" = yes ]; then echo "changed: packageMirror source written"; fi
else
  echo "unchanged: all packages installed (pgbackrest $(dpkg-query -W -f='${{Version}}' pgbackrest))"
fi
"""
    )


def _repository_dirs_script() -> str:
    user, home = REPOSITORY_USER, f"/home/{REPOSITORY_USER}"
    dirs = [
        ("/var/lib/pgha", "0755", "root:root"),
        (home, "0750", f"{user}:{user}"),
        (f"{home}/.ssh", "0700", f"{user}:{user}"),
        (REPOSITORY_PATH, "0750", f"{user}:{user}"),
        ("/var/log/pgbackrest", "0750", f"{user}:{user}"),
        ("/var/spool/pgbackrest", "0750", f"{user}:{user}"),
    ]
    return rf"""
changed=""
# The repository's owner: a system user with a shell (pgBackRest runs its remote side over ssh) and no password.
if ! id -u {user} >/dev/null 2>&1; then
  useradd --system --user-group --home-dir {home} --shell /bin/bash --comment "pgBackRest repository" {user}
  changed=" user {user}"
fi
{_install_dirs(dirs)}
if [ -n "$changed" ]; then echo "changed: repository directories$changed"
else echo "unchanged: repository directories"; fi
"""


def _backup_stanza_script(config: ClusterConfig) -> str:
    return rf"""
repo() {{ runuser -u {REPOSITORY_USER} -- pgbackrest --stanza={config.stanza} "$@"; }}
did=""
out=$(repo stanza-create 2>&1) || {{ echo "$out" >&2; echo "failed: pgbackrest stanza-create" >&2; exit 1; }}
case "$out" in *"already exists"*) ;; *) did=" stanza {config.stanza} created" ;; esac
# check: the primary's archive_command reaches the repository (a switched WAL segment arrives). The first pushes of
# a new cluster failed until the stanza existed: pgBackRest retries them, so allow a few rounds.
for attempt in 1 2 3; do
  if out=$(repo check 2>&1); then break; fi
  if [ "$attempt" = 3 ]; then echo "$out" >&2; echo "failed: pgbackrest check (WAL archiving)" >&2; exit 1; fi
  sleep 5
done
# Point-in-time restores need a backup older than the target: the first full backup now, not at the first timer.
if ! repo info | grep -qE '^ +full backup:'; then
  repo --type=full --log-level-console=warn backup
  did="$did, first full backup taken"
fi
if [ -n "$did" ]; then echo "changed:${{did#,}}"
else echo "unchanged: stanza {config.stanza} valid, archiving checked"; fi
"""


_BACKUP_SCHEDULE = r"""
fingerprint=$1
state=/var/lib/pgha/backup-schedule.applied
did="" units_changed=no
if [ "$(cat "$state" 2>/dev/null)" != "$fingerprint" ]; then
  systemctl daemon-reload
  did=" daemon-reload" units_changed=yes
fi
for timer in pgha-backup-full.timer pgha-backup-diff.timer; do
  systemctl is-enabled --quiet "$timer" || { systemctl enable --quiet "$timer"; did="$did $timer enabled"; }
  if ! systemctl is-active --quiet "$timer"; then systemctl start "$timer"; did="$did $timer started"
  elif [ "$units_changed" = yes ]; then systemctl restart "$timer"; did="$did $timer restarted (new schedule)"; fi
done
echo "$fingerprint" >"$state"
if [ -n "$did" ]; then echo "changed:$did"; else echo "unchanged: backup timers active"; fi
"""

_BACKUP_SCHEDULE_STOP = r"""
for timer in pgha-backup-full.timer pgha-backup-diff.timer; do
  systemctl disable --now --quiet "$timer" 2>/dev/null || true
done
rm -f /var/lib/pgha/backup-schedule.applied
# The repository itself ({path}) is kept: backups outlive the cluster's resources.
echo "changed: backup timers stopped"
""".replace("{path}", REPOSITORY_PATH)


def _repository_setup_steps(
    config: ClusterConfig, files: list[ServerFile], checks: list[str]
) -> tuple[list[Step], list[str]]:
    """The repository host's packages, user, files, pinned host keys and firewall (no database node needed). Like
    every node's, its directories step (and so every file) waits for the nodes' phase-0 checks: a refused change
    writes nothing anywhere."""
    assert config.backup is not None
    r = config.backup.host.name
    steps = [
        Step(r, "packages", _sudo_script("packages", _repository_packages_script(config))),
        Step(
            r, "directories", _sudo_script("directories", _repository_dirs_script()), after=(f"{r}/packages", *checks)
        ),
    ]
    refs = []
    for file in files:
        after = [f"{r}/directories"]
        step = Step(
            r,
            _file_step_name(file.path),
            put_file_command(file),
            stdin=_file_content(config, config.backup.host, file.path),
            secret=file.secret,
            after=tuple(after),
        )
        steps.append(step)
        refs.append(step.ref)
    hosts_ref = f"{r}/{_file_step_name('/etc/hosts')}"
    # After each node's first command: a new VM's sshd answers by then.
    nodes_up = tuple(f"{n.name}/packages" for n in config.nodes)
    steps.append(
        Step(r, "ssh-known-hosts", _sudo_script("known-hosts", _known_hosts_script(config, repository=True)),
             after=(hosts_ref, *nodes_up))
    )  # fmt: skip
    refs.append(f"{r}/ssh-known-hosts")
    fw_after = [f"{r}/packages"]
    if config.firewall.enabled:
        fw_after.append(f"{r}/{_file_step_name('/etc/nftables.conf')}")
    steps.append(Step(r, "firewall", _sudo_script("firewall", _firewall_script(config)), after=tuple(fw_after)))
    refs.append(f"{r}/firewall")
    return steps, refs


# --- monitoring (monitoring.*) ------------------------------------------------------------------------------------
# The services each kind of host runs, restarted when their files change.
DATABASE_MONITORING_UNITS = (
    "prometheus-node-exporter",
    "prometheus-postgres-exporter",
    "pgha-pgpool2-exporter",
    "pgha-metrics",
)
REPOSITORY_MONITORING_UNITS = ("prometheus-node-exporter", "prometheus", "prometheus-alertmanager", "pgha-metrics")

_MONITORING_SERVICES = r"""
# Arguments: stdin|-, then unit=fingerprint ... (of the files each unit reads); with "stdin", stdin holds the same
# for the secret files (a password change restarts postgres_exporter, which reads its password file once).
secret_fingerprint=""
if [ "$1" = stdin ]; then secret_fingerprint=$(cat); fi
shift
did=""
# A new unit, or a unit file rewritten since systemd read it (a restart would otherwise run the old definition).
stale=no
for spec in "$@"; do
  [ "$(systemctl show -P NeedDaemonReload "${spec%%=*}" 2>/dev/null)" != yes ] || stale=yes
done
if [ "$(cat /var/lib/pgha/monitoring.units 2>/dev/null)" != "$*" ] || [ "$stale" = yes ]; then
  systemctl daemon-reload; did=" daemon-reload"
fi
for spec in "$@"; do
  unit=${spec%%=*} fingerprint="${spec#*=} $secret_fingerprint"
  state=/var/lib/pgha/monitoring-$unit.applied
  systemctl is-enabled --quiet "$unit" 2>/dev/null || { systemctl enable --quiet "$unit"; did="$did $unit enabled"; }
  if ! systemctl is-active --quiet "$unit"; then systemctl start "$unit"; did="$did $unit started"
  elif [ "$(cat "$state" 2>/dev/null)" != "$fingerprint" ]; then
    systemctl restart "$unit"; did="$did $unit restarted"
  fi
  echo "$fingerprint" >"$state"
done
echo "$*" >/var/lib/pgha/monitoring.units
if [ -n "$did" ]; then echo "changed:$did"; else echo "unchanged: monitoring services running"; fi
"""

_MONITORING_STOP = r"""
for unit in "$@"; do systemctl disable --now --quiet "$unit" 2>/dev/null || true; done
rm -f /var/lib/pgha/monitoring.units /var/lib/pgha/monitoring-*.applied
echo "changed: monitoring services stopped: $*"
"""


def _monitoring_step(config: ClusterConfig, host: Node, units: tuple[str, ...], after: tuple[str, ...]) -> Step:
    files = _node_files(config, host)
    specs = [f"{unit}={service_fingerprints(files, unit)[0]}" for unit in units]
    # Secret files among the units' (postgres_exporter's password): their fingerprint travels on stdin, as a secret.
    with_secrets = any(f.secret and f.service in units for f in files)

    def secret_fingerprint(secrets: ClusterSecrets) -> str:
        rendered = render_node_files(config, host, secrets)
        return " ".join(service_fingerprints(rendered, unit, secret=True)[0] for unit in units) + "\n"

    return Step(
        host.name,
        "monitoring-services",
        _sudo_script("monitoring-services", _MONITORING_SERVICES, "stdin" if with_secrets else "-", *specs),
        delete=_sudo_script("monitoring-stop", _MONITORING_STOP, *units),
        stdin=secret_fingerprint if with_secrets else None,
        secret=with_secrets,
        after=after,
    )


_INSTALL_UPLOAD = r"""
staged=$1 dst=$2 mode=$3 unit=$4
read -r want   # stdin: the sha256 of the file on the machine running Pulumi
home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
src="$home/$staged"
[ -f "$src" ] || { echo "failed: $src is missing (the step's CopyToRemote puts it there)" >&2; exit 1; }
have=$(sha256sum "$src" | cut -d' ' -f1)
[ "$have" = "$want" ] || { echo "failed: $src has sha256 $have, not the uploaded file's $want" >&2; exit 1; }
if [ -f "$dst" ] && [ "$(sha256sum "$dst" | cut -d' ' -f1)" = "$want" ] \
   && [ "$(stat -c '%a %U:%G' "$dst")" = "${mode#0} root:root" ]; then
  echo "unchanged: $dst"
  exit 0
fi
install -d -m 0755 "$(dirname "$dst")"
install -m "$mode" -o root -g root "$src" "$dst.pgha-new"
mv -f "$dst.pgha-new" "$dst"
echo "changed: $dst (sha256 $want)"
# A new binary under a running service: restart it (the first install comes before the service is started).
if [ "$unit" != - ] && systemctl is-active --quiet "$unit"; then
  systemctl restart "$unit"
  echo "changed: $unit restarted"
fi
"""


def _sha256_of(path: str) -> Callable[[ClusterSecrets], str]:
    def digest(_secrets: ClusterSecrets) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() + "\n"

    return digest


def _upload_step(host: Node, name: str, source: str, dst: str, mode: str, unit: str | None, after: str) -> Step:
    """Install a file of the machine running Pulumi at `dst` (root-owned), restarting `unit` when it changed."""
    staged = f"pgha-uploads/{PurePosixPath(source).name}"
    return Step(
        host.name,
        name,
        _sudo_script("install-upload", _INSTALL_UPLOAD, staged, dst, mode, unit or "-"),
        stdin=_sha256_of(source),
        after=(after,),
        upload=Upload(source=source, staged=staged),
    )


def _ask_member_function(config: ClusterConfig) -> str:
    """`ask ADDRESS -c SQL...`: a query to a recorded member as the check user, with the credentials already in place
    (the phase-0 checks need nothing the change is about to rewrite); prints nothing when it does not answer."""
    pg = config.postgresql
    return (
        "ask() { runuser -u postgres -- env PGPASSFILE=/var/lib/postgresql/.pgpass psql -XAtqw -F= "
        f'"host=$1 port={pg.port} user={pg.check_user} dbname=postgres connect_timeout=3" "${{@:2}}" 2>/dev/null '
        "|| true; }"
    )


def _membership_check_script(config: ClusterConfig) -> str:
    """Before anything is written anywhere: a change to `nodes` must keep the primary and the surviving nodes'
    positions (pgpool's backend ids). Reads the members this node recorded at its last join (name address), and
    asks them over the network with the credentials in place, so it needs nothing the change is about to rewrite."""
    names = " ".join(n.name for n in config.nodes)
    return rf"""
{_ask_member_function(config)}
state={MEMBERS_STATE}
new=({names})
if [ ! -s "$state" ]; then
  echo "unchanged: no cluster membership recorded on this node yet (new node or first up): nothing to check"
  exit 0
fi
old=()
primary=""
while read -r name address; do
  [ -n "$name" ] || continue
  old+=("$name")
  if [ -z "$primary" ]; then
    if [ "$(ask "$address" -c 'SELECT pg_is_in_recovery()')" = f ]; then primary=$name; fi
  fi
done <"$state"
# pgpool numbers its backends by position: a node that stays keeps its place (add at the end, remove from the end).
for i in "${{!old[@]}}"; do
  for j in "${{!new[@]}}"; do
    if [ "${{new[$j]}}" = "${{old[$i]}}" ] && [ "$i" != "$j" ]; then
      echo "failed: nodes: ${{old[$i]}} would move from position $i to $j; pgpool's backend ids are positions:" \
        "add nodes at the end of the list and remove them from the end (nothing was changed)" >&2
      exit 1
    fi
  done
done
if [ -n "$primary" ] && [[ " ${{new[*]}} " != *" $primary "* ]]; then
  echo "failed: nodes: the primary, $primary, is not in the new list: switch over to a node that stays first" \
    "(pcp_promote_node --switchover, or stop PostgreSQL on $primary and let pgpool fail over), then run" \
    "pulumi up again (nothing was changed)" >&2
  exit 1
fi
echo "unchanged: members ${{old[*]}} -> ${{new[*]}}: primary ${{primary:-not found}} stays, positions kept"
"""


# PostgreSQL's hot-standby rule: a standby refuses to start (it aborts recovery) when one of these is lower than the
# primary's value, which the primary records in its WAL at start. Absent from our files -> PostgreSQL's default.
HOT_STANDBY_MINIMUMS = {
    "max_connections": "100",
    "max_locks_per_transaction": "64",
    "max_prepared_transactions": "0",
    "max_wal_senders": "10",
    "max_worker_processes": "8",
}


def _hot_standby_values(config: ClusterConfig, files_by_node: dict[str, list[ServerFile]]) -> dict[str, str]:
    """The values of the hot-standby settings the nodes get (identical on every node)."""
    values = dict(HOT_STANDBY_MINIMUMS)
    for file in files_by_node[config.nodes[0].name]:
        if file.service == "postgresql" and file.apply == "params":
            values.update({k: v for k, v in parse_settings(file.content).items() if k in values})
    return values


def _hot_standby_check_script(config: ClusterConfig, values: dict[str, str]) -> str:
    """Before anything is written anywhere: none of the hot-standby settings may go below the running primary's value.
    Raising them is fine (standbys restart first, then the switchover). Lowering one would leave every standby that
    restarts with it unable to start (a CI-style run of this program lost a standby that way), and it can only be
    done by restarting the primary itself with the lower value first: a write outage `up` does not cause on its own."""
    pg_names = ", ".join(f"'{k}'" for k in values)
    wanted = " ".join(f"[{k}]={v}" for k, v in values.items())
    return rf"""
{_ask_member_function(config)}
state={MEMBERS_STATE}
declare -A wanted=({wanted})
if [ ! -s "$state" ]; then
  echo "unchanged: no cluster membership recorded on this node yet (new node or first up): nothing to compare"
  exit 0
fi
primary="" running=""
while read -r name address; do
  [ -n "$name" ] || continue
  answer=$(ask "$address" -c 'SELECT pg_is_in_recovery()' \
    -c "SELECT name, setting FROM pg_settings WHERE name IN ({pg_names}) ORDER BY 1")
  if [ "$(head -n 1 <<<"$answer")" = f ]; then primary=$name running=$(tail -n +2 <<<"$answer"); break; fi
done <"$state"
if [ -z "$primary" ]; then
  echo "unchanged: no recorded member answers as the primary: nothing to compare"
  exit 0
fi
too_low=""
while IFS='=' read -r name value; do
  [ -n "$name" ] || continue
  if [ "${{wanted[$name]}}" -lt "$value" ]; then
    too_low="$too_low postgresql.parameters.$name=${{wanted[$name]}} (the primary, $primary, runs $value);"
  fi
done <<<"$running"
if [ -n "$too_low" ]; then
  echo "failed:$too_low PostgreSQL standbys cannot run with a lower value than their primary, so these settings" \
    "can only go down by restarting the primary with the new value first (a write outage): pulumi up does not do" \
    "that; keep the current value (nothing was changed)" >&2
  exit 1
fi
echo "unchanged: hot-standby settings not below the primary's ($primary): $(tr '\n' ' ' <<<"$running")"
"""


_PGPOOL_SERVICE = r"""
restart_fp=$1 reload_fp=$2
state=/var/lib/pgha/pgpool.applied
did=""
if [ "$(systemctl show -p NeedDaemonReload --value pgpool2)" = yes ]; then
  systemctl daemon-reload; did=" daemon-reload"
fi
systemctl is-enabled --quiet pgpool2 || { systemctl enable --quiet pgpool2; did="$did enabled"; }
read -r applied_restart applied_reload 2>/dev/null <"$state" || { applied_restart=none; applied_reload=none; }
if ! systemctl is-active --quiet pgpool2; then
  systemctl start pgpool2
  did="$did started"
elif [ "$applied_restart" != "$restart_fp" ]; then
  systemctl restart pgpool2
  did="$did restarted (restart-only settings changed)"
elif [ "$applied_reload" != "$reload_fp" ]; then
  systemctl reload pgpool2
  did="$did reloaded"
fi
echo "$restart_fp $reload_fp" >"$state"
sleep 2
if ! systemctl is-active --quiet pgpool2; then echo "failed: pgpool2 is not running" >&2; exit 1; fi
if [ -n "$did" ]; then echo "changed: pgpool2$did"; else echo "unchanged: pgpool2 running with this configuration"; fi
"""

_PGPOOL_STOP = r"""
vip=$1 dev=$2
did=""
if systemctl is-active --quiet pgpool2; then systemctl stop pgpool2; did=" stopped"; fi
systemctl is-enabled --quiet pgpool2 && { systemctl disable --quiet pgpool2; did="$did disabled"; }
if ip -4 -o addr show dev "$dev" | grep -qF " ${vip%/*}/"; then
  ip addr del "$vip" dev "$dev"; did="$did VIP released"
fi
rm -f /var/lib/pgha/pgpool.applied /var/lib/pgha/pgpool-secrets.applied
if [ -n "$did" ]; then echo "changed: pgpool2$did"; else echo "unchanged: pgpool2 already stopped"; fi
"""

_FENCE_SERVICE = r"""
fingerprint=$1 wanted=$2
state=/var/lib/pgha/fence.applied
did=""
if [ "$(systemctl show -p NeedDaemonReload --value pgha-fence)" = yes ]; then
  systemctl daemon-reload; did=" daemon-reload"
fi
if [ "$wanted" = on ]; then
  systemctl is-enabled --quiet pgha-fence || { systemctl enable --quiet pgha-fence; did="$did enabled"; }
  if ! systemctl is-active --quiet pgha-fence; then
    systemctl start pgha-fence; did="$did started"
  elif [ "$(cat "$state" 2>/dev/null)" != "$fingerprint" ]; then
    systemctl restart pgha-fence; did="$did restarted (script or unit changed)"
  fi
  echo "$fingerprint" >"$state"
  sleep 1
  if ! systemctl is-active --quiet pgha-fence; then echo "failed: pgha-fence is not running" >&2; exit 1; fi
else
  if systemctl is-active --quiet pgha-fence; then systemctl stop pgha-fence; did="$did stopped"; fi
  if systemctl is-enabled --quiet pgha-fence; then systemctl disable --quiet pgha-fence; did="$did disabled"; fi
  rm -f "$state"
fi
if [ -n "$did" ]; then echo "changed: pgha-fence$did"; else echo "unchanged: pgha-fence $wanted"; fi
"""

_FENCE_STOP = r"""
did=""
if systemctl is-active --quiet pgha-fence; then systemctl stop pgha-fence; did=" stopped"; fi
if systemctl is-enabled --quiet pgha-fence 2>/dev/null; then
  systemctl disable --quiet pgha-fence; did="$did disabled"
fi
rm -f /var/lib/pgha/fence.applied
if [ -n "$did" ]; then echo "changed: pgha-fence$did"; else echo "unchanged: pgha-fence already stopped"; fi
"""

_PASSWORDS_HOLD = rf"""
read -r _ reload_fp   # fingerprint of the reloadable secret files (stdin: derived from secrets)
state=/var/lib/pgha/pgpool-secrets.applied
read -r _ applied_reload 2>/dev/null <"$state" || applied_reload=""
if [ -z "$applied_reload" ] || [ "$applied_reload" = "$reload_fp" ]; then
  echo "unchanged: no password of pgpool's changes here"
  exit 0
fi
# PostgreSQL keeps one password per role: between the primary's ALTER ROLE and every pgpool's reload, a health check
# would log in with the other password, fail, and fail the node over. Health checks pause on every node first
# (passwords-roles runs after all of them), and pgpool-secrets resumes them once the new passwords work everywhere.
hold=$(mktemp {HOLD_CONF}.XXXXXX)
printf '%s\n' "# Written by pgha passwords-hold: a password change is under way; pgpool-secrets empties this file." \
  "health_check_period = 0" >"$hold"
chmod 0640 "$hold"
chown root:postgres "$hold"
mv -f "$hold" {HOLD_CONF}
# Bounded: should this `up` stop before pgpool-secrets, a timer resumes the checks in 10 min, if by then every running
# PostgreSQL takes the passwords pgpool has (otherwise they stay paused and the timer's unit fails, in the journal).
systemctl stop pgha-hold-expiry.timer >/dev/null 2>&1 || true
systemctl reset-failed pgha-hold-expiry.service >/dev/null 2>&1 || true
systemd-run --quiet --unit=pgha-hold-expiry --on-active=600 {PASSWORDS} release 0
if systemctl is-active --quiet pgpool2; then
  systemctl reload pgpool2
  sleep 1   # the health check processes take the new period at their next loop (a signal ends their sleep)
fi
echo "changed: pgpool health checks paused for the password change (pgpool-secrets resumes them)"
"""


def _passwords_roles_script(config: ClusterConfig) -> str:
    return (
        _pg_common(config)
        + r"""
sql=$(cat)   # roles and passwords (stdin: never in argv or environment)
if ! running; then echo "unchanged: PostgreSQL is down here; the primary sets the passwords"; exit 0; fi
if [ ! -f "$MEMBER" ]; then
  echo "unchanged: not a cluster member yet (primary-bootstrap sets the first passwords)"
  exit 0
fi
if [ "$(psql_local -c 'SELECT pg_is_in_recovery()')" != f ]; then
  echo "unchanged: a standby (the primary sets the passwords; they replicate here)"
  exit 0
fi
refused=$("$PASSWORDS" refused 127.0.0.1)
if [ -z "$refused" ]; then echo "unchanged: the roles' passwords are the stack's"; exit 0; fi
printf '%s\n' "$sql" | psql_local -d postgres >/dev/null
still=$("$PASSWORDS" refused 127.0.0.1)
if [ -n "$still" ]; then echo "failed: still refused after setting the passwords:$still" >&2; exit 1; fi
echo "changed: new passwords set on this primary for:$refused"
"""
    )


def _pgpool_secrets_script(config: ClusterConfig) -> str:
    pg = config.postgresql
    check_user, recovery_user = pg.check_user, pg.recovery_user
    pg_port, pool_port = pg.port, config.pgpool.port
    return (
        _pg_common(config)
        + rf"""
read -r restart_fp reload_fp   # fingerprints of the secret files (stdin: derived from secrets)
state=/var/lib/pgha/pgpool-secrets.applied
read -r applied_restart applied_reload 2>/dev/null <"$state" || {{ applied_restart=""; applied_reload=""; }}
did=""
released=no
if [ -s {HOLD_CONF} ]; then
  # A password change: every running PostgreSQL must take the new passwords before pgpool's health checks use them
  # again (standbys replay the primary's ALTER ROLE). Bounded; on failure the checks stay paused and this step fails.
  "$PASSWORDS" release 60
  released=yes
  did=" reloaded (passwords changed), health checks resumed"
fi
if [ -z "$applied_restart" ]; then
  :   # first run: pgpool-service just started pgpool with these files
elif ! systemctl is-active --quiet pgpool2; then
  :
elif [ "$applied_restart" != "$restart_fp" ]; then
  systemctl restart pgpool2; did=" restarted (pgpool key changed)"
elif [ "$applied_reload" != "$reload_fp" ] && [ "$released" = no ]; then
  systemctl reload pgpool2; did=" reloaded (passwords changed)"
fi
if [ -n "$did" ] && systemctl is-active --quiet pgpool2; then
  # Done only when this pgpool takes the new passwords: a CI run saw one refuse the new postgres password for up to
  # 30 s after a reload (its children read pool_passwd again only once the main process passed the reload on).
  # Log in through it as the check and recovery users, with a pgpass for its port made from ~postgres/.pgpass;
  # re-send the reload every 10 s; bounded.
  pass=$(mktemp)
  trap 'rm -f "$pass"' EXIT
  chown postgres "$pass"
  sed -nE "s/^\*:{pg_port}:\*:({check_user}|{recovery_user}):/127.0.0.1:{pool_port}:postgres:\1:/p" \
    /var/lib/postgresql/.pgpass >"$pass"
  takes() {{
    local user
    for user in {check_user} {recovery_user}; do
      runuser -u postgres -- env PGPASSFILE="$pass" psql -XAtqw \
        "host=127.0.0.1 port={pool_port} user=$user dbname=postgres connect_timeout=5" -c 'SELECT 1' >/dev/null 2>&1 \
        || return 1
    done
  }}
  waited=0
  until takes; do
    if [ "$waited" -ge 60 ]; then
      echo "failed: pgpool on this node still refuses the new passwords after 60 s" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
    if [ $((waited % 10)) = 0 ]; then systemctl reload pgpool2; did="$did, reloaded again after $waited s"; fi
  done
  did="$did, logins through it checked after $waited s"
fi
umask 077
echo "$restart_fp $reload_fp" >"$state"
if [ -n "$did" ]; then echo "changed: pgpool2$did"; else echo "unchanged: pgpool2 secrets in force"; fi
"""
    )


def _node_files(config: ClusterConfig, node: Node) -> list[ServerFile]:
    return render_node_files(config, node, ClusterSecrets.placeholders())


@functools.lru_cache(maxsize=64)
def _rendered(config: ClusterConfig, node: Node, secrets: ClusterSecrets) -> dict[str, str]:
    return {file.path: file.content for file in render_node_files(config, node, secrets)}


def _file_content(config: ClusterConfig, node: Node, path: str) -> Callable[[ClusterSecrets], str]:
    def content(secrets: ClusterSecrets) -> str:
        return _rendered(config, node, secrets)[path]

    return content


def _secret_fingerprints(config: ClusterConfig, node: Node) -> Callable[[ClusterSecrets], str]:
    def fingerprints(secrets: ClusterSecrets) -> str:
        restart, reload = service_fingerprints(render_node_files(config, node, secrets), "pgpool2", secret=True)
        return f"{restart} {reload}\n"

    return fingerprints


def provisioning_plan(config: ClusterConfig) -> list[Step]:
    """Every step for every node, in a valid dependency order."""
    steps: list[Step] = []
    primary = config.primary_node
    data_dir = config.pg_data_directory + "/"
    files_by_node = {node.name: _node_files(config, node) for node in config.nodes}
    file_refs: dict[str, list[str]] = {}
    pg_refs: dict[str, list[str]] = {}
    repository_refs: list[str] = []

    # Phase 0: a change to `nodes` is checked on every node that is already a member before any node writes
    # anything (every directories step, and so every file, waits for every check).
    checks = []
    hot_standby_script = _hot_standby_check_script(config, _hot_standby_values(config, files_by_node))
    for node in config.nodes:
        n = node.name
        steps.append(Step(n, "packages", _sudo_script("packages", _packages_script(config))))
        check = Step(
            n, "membership-check", _sudo_script("membership-check", _membership_check_script(config)),
            after=(f"{n}/packages",),
        )  # fmt: skip
        steps.append(check)
        checks.append(check.ref)
        hot_standby = Step(
            n, "hot-standby-check", _sudo_script("hot-standby-check", hot_standby_script), after=(f"{n}/packages",)
        )
        steps.append(hot_standby)
        checks.append(hot_standby.ref)
    if config.backup is not None:  # the repository host: set up alongside the nodes, no database needed
        repository_steps, repository_refs = _repository_setup_steps(
            config, _node_files(config, config.backup.host), checks
        )
        steps += repository_steps
    # Phase 1, every node: directories, files (except those in the data directory), ssh host keys, firewall,
    # PostgreSQL configured for either role.
    for node in config.nodes:
        n = node.name
        steps.append(
            Step(n, "directories", _sudo_script("directories", _dirs_script(config)), after=(f"{n}/packages", *checks))
        )
        file_refs[n] = []
        pg_refs[n] = []
        for file in files_by_node[n]:
            if file.path.startswith(data_dir):
                continue
            after = [f"{n}/directories"]
            if file.path == "/etc/nftables.conf":
                after.append(f"{n}/packages")
            step = Step(
                n,
                _file_step_name(file.path),
                put_file_command(file),
                stdin=_file_content(config, node, file.path),
                secret=file.secret,
                after=tuple(after),
            )
            steps.append(step)
            file_refs[n].append(step.ref)
            if file.service == "postgresql" or file.path.startswith(("/var/lib/postgresql/.", "/usr/local/lib/pgha/")):
                pg_refs[n].append(step.ref)
        hosts_ref = f"{n}/{_file_step_name('/etc/hosts')}"
        # The repository host's key too, once its sshd has answered (its first command).
        repository_up = (f"{config.backup.host.name}/packages",) if config.backup is not None else ()
        steps.append(
            Step(n, "ssh-known-hosts", _sudo_script("known-hosts", _known_hosts_script(config)),
                 after=(hosts_ref, *repository_up))
        )  # fmt: skip
        file_refs[n].append(f"{n}/ssh-known-hosts")
        fw_after = [f"{n}/packages"]
        if config.firewall.enabled:
            fw_after.append(f"{n}/{_file_step_name('/etc/nftables.conf')}")
        steps.append(Step(n, "firewall", _sudo_script("firewall", _firewall_script(config)), after=tuple(fw_after)))
        file_refs[n].append(f"{n}/firewall")
        sysctl_ref = f"{n}/{_file_step_name('/etc/sysctl.d/60-pgha.conf')}"
        steps.append(Step(n, "kernel-settings", _sudo_script("kernel-settings", _KERNEL_SETTINGS), after=(sysctl_ref,)))
        file_refs[n].append(f"{n}/kernel-settings")
        pg_restart, pg_reload = service_fingerprints(files_by_node[n], "postgresql")
        steps.append(
            Step(
                n,
                "postgresql-config",
                _sudo_script("postgresql-config", _pg_config_script(config, f"{pg_restart}-{pg_reload}")),
                after=tuple([*pg_refs[n], hosts_ref]),
            )
        )

    # Phase 2: the first primary (once), then the standbys from whichever node is primary.
    ready: list[str] = []
    bootstrap = Step(
        primary.name,
        "primary-bootstrap",
        _sudo_script("primary-bootstrap", _bootstrap_script(config, primary)),
        stdin=_bootstrap_sql(config),
        secret=True,
        after=(f"{primary.name}/postgresql-config",),
    )
    steps.append(bootstrap)
    ready.append(bootstrap.ref)
    for node in config.standby_nodes:
        clone = Step(
            node.name,
            "standby-clone",
            _sudo_script("standby-clone", _clone_script(config, node)),
            after=(f"{node.name}/postgresql-config", bootstrap.ref, f"{node.name}/ssh-known-hosts"),
        )
        steps.append(clone)
        ready.append(clone.ref)

    # Phase 3: the online-recovery scripts in every data directory (after the clone replaced it).
    for node in config.nodes:
        n = node.name
        own = bootstrap.ref if node == primary else f"{n}/standby-clone"
        for file in files_by_node[n]:
            if not file.path.startswith(data_dir):
                continue
            step = Step(
                n,
                _file_step_name(file.path),
                put_file_command(file),
                stdin=_file_content(config, node, file.path),
                secret=file.secret,
                after=(own,),
            )
            steps.append(step)
            file_refs[n].append(step.ref)

    # Membership (templates/usr/local/lib/pgha/pgha-members): the command lists the nodes, so a change to `nodes`
    # runs it on every node before any pgpool restarts: it refuses when the primary is not among them, and stops the
    # pgpools of removed nodes. Its delete, on a removed node (run after every update): stop PostgreSQL, drop the slot.
    members = " ".join(n.name for n in config.nodes)
    member_refs = []
    for node in config.nodes:
        n = node.name
        step = Step(
            n,
            "cluster-member",
            _sudo_script("cluster-member", f"# members: {members}\nexec {MEMBERS} join"),
            delete=_sudo_script("cluster-leave", f"exec {MEMBERS} leave"),
            after=tuple([*file_refs[n], *ready, f"{n}/postgresql-config"]),
        )
        steps.append(step)
        member_refs.append(step.ref)

    # Phase 4: pgpool on every node, once all its files are in place and PostgreSQL is ready on all nodes. One node
    # after the other (Pulumi would otherwise restart every pgpool at once and leave no VIP holder for a while).
    previous: list[str] = [*member_refs]
    for node in config.nodes:
        n = node.name
        restart_fp, reload_fp = service_fingerprints(files_by_node[n], "pgpool2")
        if config.pgpool.package_version:  # a new pgpool package: the same rolling restart as a restart-only setting
            restart_fp = f"{restart_fp}-{config.pgpool.package_version}"
        steps.append(
            Step(
                n,
                "pgpool-service",
                _sudo_script("pgpool-service", _PGPOOL_SERVICE, restart_fp, reload_fp),
                delete=_sudo_script(
                    "pgpool-stop", _PGPOOL_STOP, f"{config.vip}/{config.prefix_length}", config.vip_interface
                ),
                after=tuple([*file_refs[n], *ready, *previous]),
            )
        )
        previous = [f"{n}/pgpool-service"]
    # New backends attached once every pgpool knows them (pgha-members attach; the command lists the nodes).
    attach_refs = []
    for node in config.nodes:
        step = Step(
            node.name,
            "cluster-attach",
            _sudo_script("cluster-attach", f"# members: {members}\nexec {MEMBERS} attach"),
            after=tuple(previous),
        )
        steps.append(step)
        attach_refs.append(step.ref)
    previous = [*previous, *attach_refs]
    # Fencing of an isolated primary: once PostgreSQL runs in its role on every node.
    for node in config.nodes:
        n = node.name
        fence_fp, _ = service_fingerprints(files_by_node[n], "pgha-fence")
        steps.append(
            Step(
                n,
                "fence-service",
                _sudo_script("fence-service", _FENCE_SERVICE, fence_fp, "on" if config.fencing.enabled else "off"),
                delete=_sudo_script("fence-stop", _FENCE_STOP),
                after=tuple([*file_refs[n], *ready]),
            )
        )
    # Restart-only PostgreSQL settings on a running cluster: the standbys one after the other, then the primary's
    # switchover (templates/usr/local/lib/pgha/pgha-apply-restart). The commands carry those settings' values, so a
    # change to one of them (and only then) runs these steps, and the preview shows which.
    restart_only = _restart_only_settings(config, files_by_node)
    switchover = "on" if config.postgresql.switchover_on_restart else "off"
    apply_refs = [f"{n.name}/{_file_step_name(APPLY_RESTART)}" for n in config.nodes]
    previous = [*previous, *(f"{n.name}/postgresql-config" for n in config.nodes), *apply_refs]
    for phase, step_name in (("standbys", "postgresql-restart"), ("primary", "postgresql-switchover")):
        for node in config.nodes:
            steps.append(
                Step(
                    node.name,
                    step_name,
                    _sudo_script(
                        step_name,
                        _apply_restart_script(restart_only, config.postgresql.package_version),
                        phase,
                        switchover,
                    ),
                    after=tuple(previous),
                )
            )
            previous = [f"{node.name}/{step_name}"]
    # Backups: once every node runs with its archive settings (restarted if they changed), the stanza exists and
    # archiving works, then the schedule. The repository keeps its backups when the stack is destroyed.
    if config.backup is not None:
        r = config.backup.host.name
        stanza = Step(
            r,
            "backup-stanza",
            _sudo_script("backup-stanza", _backup_stanza_script(config)),
            after=tuple([*repository_refs, *previous]),
        )
        schedule_fp, _ = service_fingerprints(_node_files(config, config.backup.host), "pgha-backup")
        steps += [
            stanza,
            Step(
                r,
                "backup-schedule",
                _sudo_script("backup-schedule", _BACKUP_SCHEDULE, schedule_fp),
                delete=_sudo_script("backup-schedule-stop", _BACKUP_SCHEDULE_STOP),
                after=(stanza.ref,),
            ),
        ]
    # Password changes, whichever node is primary now: health checks pause on every pgpool, the primary sets the new
    # passwords, then every pgpool reloads them (once every running PostgreSQL takes them) and resumes its checks.
    holds = [
        Step(
            node.name,
            "passwords-hold",
            _sudo_script("passwords-hold", _PASSWORDS_HOLD),
            stdin=_secret_fingerprints(config, node),
            secret=True,
            after=tuple(previous),
        )
        for node in config.nodes
    ]
    roles = [
        Step(
            node.name,
            "passwords-roles",
            _sudo_script("passwords-roles", _passwords_roles_script(config)),
            stdin=_bootstrap_sql(config),
            secret=True,
            after=tuple(h.ref for h in holds),
        )
        for node in config.nodes
    ]
    steps += holds + roles
    for node in config.nodes:
        steps.append(
            Step(
                node.name,
                "pgpool-secrets",
                _sudo_script("pgpool-secrets", _pgpool_secrets_script(config)),
                stdin=_secret_fingerprints(config, node),
                secret=True,
                after=(f"{node.name}/pgpool-service", *(r.ref for r in roles)),
            )
        )
    # Monitoring: exporters and pgha-metrics on every node (the check user's password comes with the files), and
    # Prometheus, Alertmanager on the repository host.
    # pgpool2_exporter and the Grafana dashboard are files of the machine running Pulumi (monitoring.*).
    if config.monitoring_enabled and config.backup is not None:
        monitoring = config.monitoring
        for node in config.nodes:
            n = node.name
            exporter = _upload_step(
                node, "pgpool2-exporter-binary", monitoring.pgpool_exporter_binary,
                str(MONITORING_VALUES["pgpool_exporter_binary"]), "0755", "pgha-pgpool2-exporter", f"{n}/directories",
            )  # fmt: skip
            steps.append(exporter)
            # After a password change reached the roles (pgpool-secrets).
            waits = (*file_refs[n], *ready, f"{n}/pgpool-secrets", exporter.ref)
            steps.append(_monitoring_step(config, node, DATABASE_MONITORING_UNITS, waits))
        r = config.backup.host.name
        steps.append(
            _upload_step(
                config.backup.host, "grafana-dashboard", monitoring.grafana_dashboard,
                str(MONITORING_VALUES["grafana_dashboard_file"]), "0644", None, f"{r}/directories",
            )
        )  # fmt: skip
        steps.append(_monitoring_step(config, config.backup.host, REPOSITORY_MONITORING_UNITS, tuple(repository_refs)))
    _check_order(steps)
    return steps


APPLY_RESTART = "/usr/local/lib/pgha/pgha-apply-restart"


def _restart_only_settings(config: ClusterConfig, files_by_node: dict[str, list[ServerFile]]) -> list[str]:
    """`name=value` of every restart-only PostgreSQL setting the nodes get (identical on every node)."""
    first = config.nodes[0].name
    found: list[str] = []
    for file in files_by_node[first]:
        if file.service == "postgresql" and file.apply == "params":
            found += [f"{k}={v}" for k, v in sorted(parse_settings(file.content).items()) if postgresql_restart_only(k)]
    return found


def _apply_restart_script(restart_only: list[str], package_version: str | None) -> str:
    listed = "\n".join(f"#   {setting}" for setting in restart_only)
    return f"""
# Restart-only PostgreSQL settings in force after this step (the step runs again when one of them changes):
{listed}
# PostgreSQL package version in force after this step: {package_version or "as installed"}
exec {APPLY_RESTART} "$@"
"""


def _check_order(steps: list[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.ref in seen:
            raise ValueError(f"duplicate step {step.ref}")
        missing = [ref for ref in step.after if ref not in seen]
        if missing:
            raise ValueError(f"step {step.ref} runs before {missing}")
        seen.add(step.ref)


def plan_digest(steps: list[Step]) -> str:
    """Stable digest of the plan's commands (for tests and logs)."""
    return hashlib.sha256("\n".join(f"{s.ref} {s.create}" for s in steps).encode()).hexdigest()[:16]
