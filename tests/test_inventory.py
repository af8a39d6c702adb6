"""Inventory loading: every rule refuses with one HaconformError naming file, key and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from haconform.errors import HaconformError
from haconform.inventory import load_inventory
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology()


def base() -> dict:
    return {
        "vip": TOPOLOGY.vip,
        "stage": "stage5",
        "defaults": {"user": "root"},
        "hosts": {
            "server1": {"address": "10.9.0.1", "cluster_nic": "eth1"},
            "server4": {"address": "10.9.0.4"},
            "server2": {"address": "10.9.0.2"},
            "server3": {"address": "10.9.0.3"},
            "client": {"netns": "hcclient"},
            "foundation5": {"local": True},
        },
    }


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load(tmp_path, data, **kwargs):
    return load_inventory(write(tmp_path, data), TOPOLOGY, resolve_ssh=kwargs.pop("resolve_ssh", False), **kwargs)


def refused(tmp_path, data, *, key: str, resolve_ssh=False) -> HaconformError:
    with pytest.raises(HaconformError) as caught:
        load(tmp_path, data, resolve_ssh=resolve_ssh)
    error = caught.value
    assert str(tmp_path / "inventory.yaml") in (error.where or ""), error
    assert key in error.what, error
    assert error.fix, error
    return error


def test_valid_inventory_maps_every_topology_host(tmp_path):
    inventory = load(tmp_path, base())
    assert set(inventory.hosts) == set(TOPOLOGY.hosts)
    server1 = inventory.access("server1")
    assert (server1.kind, server1.address, server1.cluster_nic, server1.sudo) == ("ssh", "10.9.0.1", "eth1", False)
    assert inventory.access("client").kind == "netns" and inventory.access("client").netns == "hcclient"
    assert inventory.access("foundation5").kind == "local"
    assert inventory.stage == "stage5"


def test_non_root_login_gets_sudo_by_default(tmp_path):
    data = base()
    data["defaults"] = {"user": "vagrant"}
    assert load(tmp_path, data).access("server2").needs_sudo


def test_relative_key_and_ssh_config_are_relative_to_the_file(tmp_path):
    (tmp_path / "id_test").write_text("not a real key")
    (tmp_path / "ssh-config").write_text("Host *\n")
    data = base()
    data["defaults"] = {"user": "root", "key": "id_test", "ssh_config": "ssh-config"}
    access = load(tmp_path, data).access("server3")
    assert access.key == str(tmp_path / "id_test") and access.ssh_config == str(tmp_path / "ssh-config")


def test_example_inventory_is_valid_apart_from_its_key(tmp_path):
    data = yaml.safe_load((REPO / "fixtures" / "inventory.example.yaml").read_text())
    (tmp_path / "id_ed25519").write_text("x")
    data["defaults"]["key"] = str(tmp_path / "id_ed25519")
    inventory = load(tmp_path, data)
    assert inventory.access("server1").power.on == "virsh start Node1"


def test_missing_file(tmp_path):
    with pytest.raises(HaconformError) as caught:
        load_inventory(tmp_path / "nope.yaml", TOPOLOGY)
    assert "file not found" in str(caught.value) and "nope.yaml" in str(caught.value)


def test_no_inventory_option():
    with pytest.raises(HaconformError, match="--inventory"):
        load_inventory(None, TOPOLOGY)


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(HaconformError) as caught:
        load(tmp_path, "vip: [1,\nhosts: {")
    assert "not valid YAML" in str(caught.value) and "inventory.yaml:" in caught.value.where


@pytest.mark.parametrize("change, key", [
    (lambda d: d.pop("vip"), "vip"),
    (lambda d: d.update(vip="172.25.5.99"), "vip"),
    (lambda d: d.update(stage="stage9"), "stage"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d.update(defaults={"colour": "red"}), "defaults"),
    (lambda d: d.update(hosts={}), "hosts"),
    (lambda d: d["hosts"].pop("server3"), "hosts.server3"),
    (lambda d: d["hosts"].update(server9={"address": "x"}), "hosts.server9"),
    (lambda d: d["hosts"].update(server2="none"), "hosts.server2"),
    (lambda d: d["hosts"].update(server2=["a"]), "hosts.server2"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "pasword": "x"}), "hosts.server2"),
    (lambda d: d["hosts"].update(server2={}), "hosts.server2.address"),
    (lambda d: d["hosts"].update(server2={"address": "-oProxyCommand=x"}), "hosts.server2.address"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "user": "Bad User"}), "hosts.server2.user"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "port": 70000}), "hosts.server2.port"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "sudo": "maybe"}), "hosts.server2.sudo"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "user": "ops", "sudo": False}), "hosts.server2.sudo"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "key": "/no/such/key"}), "hosts.server2.key"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "ssh_config": "/no/cfg"}), "hosts.server2.ssh_config"),
    (lambda d: d["hosts"].update(server2={"address": "10.9.0.2", "cluster_nic": "eth 1"}), "hosts.server2.cluster_nic"),
    (lambda d: d["hosts"].update(server1={"address": "10.9.0.1", "power": "virsh"}), "hosts.server1.power"),
    (lambda d: d["hosts"].update(server1={"address": "10.9.0.1", "power": {"via": "local"}}), "hosts.server1.power"),
    (lambda d: d["hosts"].update(server1={"address": "10.9.0.1", "power": {"via": "local", "boot": "x"}}),
     "hosts.server1.power"),
    (lambda d: d["hosts"].update(server1={"address": "10.9.0.1", "power": {"via": "local", "on": ""}}),
     "hosts.server1.power.on"),
    (lambda d: d["hosts"].update(server1={"address": "10.9.0.1", "power": {"via": "server1", "on": "x"}}),
     "hosts.server1.power.via"),
    (lambda d: d["hosts"].update(server1={"address": "10.9.0.1", "power": {"via": "client", "on": "x"}}),
     "hosts.server1.power.via"),
    (lambda d: d["hosts"].update(server2={"local": True}), "hosts.server2"),
    (lambda d: d["hosts"].update(client={"local": "yes"}), "hosts.client"),
    (lambda d: d["hosts"].update(server2={"netns": "hcx"}), "hosts.server2"),
    (lambda d: d["hosts"].update(client={"netns": "bad name"}), "hosts.client.netns"),
    (lambda d: d["hosts"].update(client={"netns": "hcx", "address": "1.2.3.4"}), "hosts.client"),
])
def test_each_rule_refuses(tmp_path, change, key):
    data = base()
    change(data)
    refused(tmp_path, data, key=key)


def test_local_client_refused_when_the_vip_is_in_the_lab_range(tmp_path):
    data = base()
    data["hosts"]["client"] = {"local": True}
    error = refused(tmp_path, data, key="hosts.client")
    assert "172.25." in error.what and "netns" in error.fix


def test_fence_host_may_be_none(tmp_path):
    data = base()
    data["hosts"]["foundation5"] = "none"
    assert load(tmp_path, data).access("foundation5").kind == "none"


def test_ssh_to_lab_range_without_proxy_is_refused(tmp_path):
    data = base()
    data["hosts"]["server2"] = {"address": "172.25.5.2"}
    error = refused(tmp_path, data, key="hosts.server2.address", resolve_ssh=True)
    assert "ProxyCommand" in error.fix


def test_ssh_config_alias_resolving_to_lab_range_is_refused(tmp_path):
    (tmp_path / "ssh-config").write_text("Host server2\n  HostName 172.25.5.2\n")
    data = base()
    data["hosts"]["server2"] = {"address": "server2", "ssh_config": "ssh-config"}
    refused(tmp_path, data, key="hosts.server2.address", resolve_ssh=True)


def test_lab_range_through_a_proxy_command_is_accepted(tmp_path):
    (tmp_path / "ssh-config").write_text(textwrap.dedent("""\
        Host server*
          ProxyCommand ip netns exec hcssh-client nc %h %p
        """))
    data = base()
    data["defaults"] = {"user": "root", "ssh_config": "ssh-config"}
    for name, address in (("server1", "172.25.5.1"), ("server2", "172.25.5.2")):
        data["hosts"][name] = {"address": address}
    refused(tmp_path, data, key="hosts.server1.address", resolve_ssh=True)  # 172.25.5.1 is not `server*`
    data["hosts"]["server1"] = {"address": "server1"}
    (tmp_path / "ssh-config").write_text("Host server1\n  HostName 172.25.5.1\n" + (tmp_path / "ssh-config").read_text()
                                         + "Host 172.25.*\n  ProxyCommand ip netns exec hcssh-client nc %h %p\n")
    inventory = load(tmp_path, data, resolve_ssh=True)
    assert inventory.access("server2").address == "172.25.5.2"


def test_ssh_config_user_decides_sudo(tmp_path):
    (tmp_path / "ssh-config").write_text("Host *\n  User vagrant\n")
    data = base()
    data["defaults"] = {"ssh_config": "ssh-config"}
    assert load(tmp_path, data, resolve_ssh=True).access("server2").needs_sudo


def test_name_resolving_to_lab_range_is_refused(tmp_path, monkeypatch):
    import socket
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, family: (
        [(family, 1, 6, "", ("172.25.5.3", 0))] if host == "server3.example" else real(host, port, family)))
    data = base()
    data["hosts"]["server3"] = {"address": "server3.example"}
    error = refused(tmp_path, data, key="hosts.server3.address", resolve_ssh=True)
    assert "172.25.5.3" in error.what


def test_waivers_come_from_a_file_beside_the_inventory_or_the_list_itself(tmp_path):
    (tmp_path / "waivers.yaml").write_text("waivers:\n  - {id: HAC-HA-007, reason: agreed, expires: 2027-03-01}\n")
    inventory = load(tmp_path, {**base(), "waivers": "waivers.yaml"})
    assert [(w.must, w.source) for w in inventory.waivers] == [
        ("HAC-HA-007", f"{tmp_path / 'waivers.yaml'}: waivers[0]")]
    inline = load(tmp_path, {**base(), "waivers": [{"id": "HAC-HA-007", "reason": "agreed", "expires": "2027-03-01"}]})
    assert inline.waivers[0].source == f"{tmp_path / 'inventory.yaml'}: waivers[0]"
    assert load(tmp_path, base()).waivers == ()
    with pytest.raises(HaconformError) as caught:
        load(tmp_path, {**base(), "waivers": [{"id": "HAC-HA-007", "reason": "agreed"}]})
    assert str(caught.value) == (f"{tmp_path / 'inventory.yaml'}: waivers[0].expires: missing field (fix: add "
                                 "`expires:` (the last day it counts, YYYY-MM-DD))")
