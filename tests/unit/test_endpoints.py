"""The exported connection strings, read back by libpq's own parser (psycopg.conninfo)."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from components.endpoints import MULTI_HOST_OPTIONS, multi_host_uri, vip_uri
from components.stack import load_stack_config

PASSWORD = "p@ss:w/rd?&=%"  # every character a URI would misread unencoded


def test_vip_uri_reaches_pgpool_on_the_vip_with_the_password_intact() -> None:
    config = load_stack_config("dev")
    parsed = conninfo_to_dict(vip_uri(config, "postgres", PASSWORD))
    assert parsed == {
        "user": "postgres",
        "password": PASSWORD,
        "host": str(config.vip),
        "port": str(config.pgpool.port),
        "dbname": "postgres",
    }


def test_multi_host_uri_lists_every_node_pgpool_in_order_with_its_timeouts() -> None:
    config = load_stack_config("dev")
    parsed = conninfo_to_dict(multi_host_uri(config, "postgres", PASSWORD))
    assert parsed.pop("host") == ",".join(str(n.address) for n in config.nodes)
    assert parsed.pop("port") == ",".join([str(config.pgpool.port)] * len(config.nodes))
    assert len(config.nodes) == 3
    assert parsed == {"user": "postgres", "password": PASSWORD, "dbname": "postgres", **MULTI_HOST_OPTIONS}
