"""cloud-init seeds are rendered without Pulumi: the cluster NIC is matched by MAC and named enp0s8."""

from __future__ import annotations

import yaml

from components.cloudinit import node_mac, render_seed
from components.stack import load_stack_config


def test_network_config_names_the_cluster_nic_by_its_fixed_mac() -> None:
    config = load_stack_config("dev")
    for node in config.nodes:
        seed = render_seed(config, node)
        network = yaml.safe_load(seed.network_config)
        assert network["version"] == 2
        cluster = network["ethernets"]["cluster"]
        assert cluster["match"] == {"macaddress": seed.cluster_mac}
        assert cluster["set-name"] == "enp0s8"
        assert cluster["addresses"] == [f"{node.address}/24"]
        assert cluster["dhcp4"] is False
        egress = network["ethernets"]["egress"]
        assert egress["match"] == {"macaddress": seed.egress_mac} and egress["dhcp4"] is True


def test_macs_are_stable_distinct_and_in_qemus_range() -> None:
    config = load_stack_config("dev")
    macs = [render_seed(config, n).cluster_mac for n in config.nodes]
    macs += [render_seed(config, n).egress_mac for n in config.nodes]
    assert len(set(macs)) == 6
    assert all(m.startswith("52:54:00:") and len(m) == 17 for m in macs)
    assert node_mac("pgha-dev", "server1", "cluster") == render_seed(config, config.nodes[0]).cluster_mac


def test_user_data_creates_the_admin_user_and_hardens_sshd() -> None:
    config = load_stack_config("dev")
    seed = render_seed(config, config.nodes[1])
    assert seed.user_data.startswith("#cloud-config\n")
    data = yaml.safe_load(seed.user_data)
    assert data["hostname"] == "server2"
    (user,) = data["users"]
    assert user["name"] == "admin" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == list(config.ssh_public_keys)
    assert data["ssh_pwauth"] is False and data["disable_root"] is True
    (sshd,) = [f for f in data["write_files"] if f["path"].startswith("/etc/ssh/sshd_config.d/")]
    assert "PasswordAuthentication no" in sshd["content"] and "PermitRootLogin no" in sshd["content"]
    assert "qemu-guest-agent" in data["packages"]
    assert "instance-id: pgha-dev-server2" in seed.meta_data


def test_interface_name_follows_the_config() -> None:
    config = load_stack_config("dev").model_copy(update={"vip_interface": "cluster0"})
    network = yaml.safe_load(render_seed(config, config.nodes[0]).network_config)
    assert network["ethernets"]["cluster"]["set-name"] == "cluster0"
