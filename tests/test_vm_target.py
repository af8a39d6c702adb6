"""The VM target's Python side, without VMs: configs it renders, files it parses, names it uses."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from haconform.errors import HaconformError
from haconform.inventory import load_inventory
from haconform.topology import load_topology
from haconform.vm import box, env, fence, libvirt

REPO = Path(__file__).resolve().parent.parent
LAB_RANGE = ipaddress.IPv4Network("172.25.0.0/16")

VAGRANT_SSH_CONFIG = """Host Node1
  HostName 10.231.5.17
  User root
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /var/lib/haconform/vm/box/id_rsa
  IdentitiesOnly yes
  LogLevel FATAL

Host Node4
  HostName 10.231.5.33
  User root
  Port 22
  IdentityFile /var/lib/haconform/vm/box/id_rsa
"""


@pytest.fixture
def topology():
    return load_topology()


# ----- fence_virtd.conf --------------------------------------------------------------
def test_fence_virtd_conf_is_what_fence_virtd_c_writes():
    text = fence.fence_virtd_conf(key_file="/k/fence_xvm.key", interface="eth0")
    conf = fence.parse_conf(text)
    assert conf == {
        "fence_virtd.listener": "multicast", "fence_virtd.backend": "libvirt",
        "fence_virtd.module_path": fence.MODULE_PATH,
        "listeners.multicast.key_file": "/k/fence_xvm.key", "listeners.multicast.interface": "eth0",
        "listeners.multicast.port": "1229", "listeners.multicast.address": "225.0.0.12",
        "listeners.multicast.family": "ipv4", "backends.libvirt.uri": "qemu:///system",
    }


def test_fence_virtd_conf_takes_the_topology_multicast_settings():
    conf = fence.parse_conf(fence.fence_virtd_conf(key_file="/k", interface="veth9", multicast_address="225.0.0.99",
                                                   port=1300))
    assert (conf["listeners.multicast.address"], conf["listeners.multicast.port"],
            conf["listeners.multicast.interface"]) == ("225.0.0.99", "1300", "veth9")


def test_fence_virtd_conf_refuses_values_that_would_break_its_syntax():
    with pytest.raises(HaconformError):
        fence.fence_virtd_conf(key_file='/k"; backend = "x', interface="eth0")


@pytest.mark.skipif(shutil.which("fence_virtd") is None, reason="fence-virtd not installed")
def test_fence_virtd_module_path_holds_the_two_plugins_used():
    assert (Path(fence.MODULE_PATH) / "multicast.so").exists()
    assert (Path(fence.MODULE_PATH) / "virt.so").exists()


# ----- libvirt network XML, firewall chains -------------------------------------------------
def test_cluster_network_has_no_host_side():
    xml = libvirt.isolated_network_xml("hacvm-cluster", "hcbr-hacvm")
    root = ET.fromstring(xml)
    assert root.findtext("name") == "hacvm-cluster"
    assert root.find("bridge").get("name") == "hcbr-hacvm"
    assert root.find("ip") is None and root.find("forward") is None and root.find("dns") is None
    libvirt.check_network_has_no_host_address(xml)


def test_a_network_with_an_address_is_refused():
    xml = ("<network><name>n</name><bridge name='b'/>"
           "<ip address='172.25.5.1' netmask='255.255.255.0'/></network>")
    with pytest.raises(HaconformError, match="<ip>"):
        libvirt.check_network_has_no_host_address(xml)


def test_bridge_names_fit_the_kernel_limit():
    for name in ("a", "hacvm", "abcdefgh"):
        vm = env.VmEnvironment.__new__(env.VmEnvironment)
        vm.name = name
        assert len(vm.cluster_bridge) <= 15


# ----- the management network ------------------------------------------------------------------
def test_management_network_is_outside_the_runbook_range(monkeypatch):
    monkeypatch.delenv("HACONFORM_VM_MGMT_ADDRESS", raising=False)
    assert not env.mgmt_subnet().overlaps(LAB_RANGE)
    monkeypatch.setenv("HACONFORM_VM_MGMT_ADDRESS", "172.25.9.0/24")
    with pytest.raises(HaconformError, match="outside"):
        env.mgmt_subnet()


# ----- the domain type: KVM when a probe boot works, else TCG -------------------------------------
def test_driver_request_defaults_to_auto_and_refuses_others(monkeypatch):
    monkeypatch.delenv("HACONFORM_VM_DRIVER", raising=False)
    assert env.requested_driver() == "auto"
    monkeypatch.setenv("HACONFORM_VM_DRIVER", "xen")
    with pytest.raises(HaconformError, match="auto"):
        env.requested_driver()


def never_probe(kernel, workdir):
    raise AssertionError("a forced driver must not cost a probe boot")


@pytest.mark.parametrize("forced", ["qemu", "kvm"])
def test_a_forced_driver_is_used_without_probing(monkeypatch, tmp_path, forced):
    monkeypatch.setenv("HACONFORM_VM_DRIVER", forced)
    choice = env.choose_driver(tmp_path / "vmlinuz", tmp_path, probe=never_probe)
    assert (choice.driver, choice.requested, choice.probe) == (forced, forced, None)
    assert f"HACONFORM_VM_DRIVER={forced}" in choice.line
    assert not (tmp_path / env.KVM_PROBE_FILE).exists()


def fake_probe(result: env.KvmProbe, calls: list):
    def probe(kernel, workdir):
        calls.append(kernel)
        return result
    return probe


def test_auto_falls_back_to_tcg_with_a_line_saying_why(monkeypatch, tmp_path):
    monkeypatch.delenv("HACONFORM_VM_DRIVER", raising=False)
    hung = env.KvmProbe(False, 20.0, "the box's kernel did not reach userspace under KVM within 20s")
    choice = env.choose_driver(tmp_path / "vmlinuz", tmp_path, probe=fake_probe(hung, []))
    assert choice.driver == "qemu" and choice.probe == hung
    assert choice.line.startswith("guests run under qemu TCG, not KVM: " + hung.why)


def test_auto_uses_kvm_when_the_probe_boots(monkeypatch, tmp_path):
    monkeypatch.delenv("HACONFORM_VM_DRIVER", raising=False)
    booted = env.KvmProbe(True, 0.8, "KVM booted the box's kernel to userspace in 0.8s")
    choice = env.choose_driver(tmp_path / "vmlinuz", tmp_path, probe=fake_probe(booted, []))
    assert choice.driver == "kvm" and "under KVM" in choice.line and "0.8s" in choice.line


def test_the_probe_runs_once_per_run_and_again_for_another_kernel(monkeypatch, tmp_path):
    monkeypatch.delenv("HACONFORM_VM_DRIVER", raising=False)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel 1")
    calls: list = []
    hung = env.KvmProbe(False, 20.0, "hung")
    first = env.choose_driver(kernel, tmp_path / "state", probe=fake_probe(hung, calls))
    again = env.choose_driver(kernel, tmp_path / "state", probe=fake_probe(hung, calls))
    assert len(calls) == 1 and first.driver == again.driver == "qemu"
    assert "probe result from" in again.line and "probe result from" not in first.line
    kernel.write_bytes(b"kernel 2, rebuilt box")
    env.choose_driver(kernel, tmp_path / "state", probe=fake_probe(hung, calls))
    assert len(calls) == 2


def test_the_probe_result_kept_beside_the_box_outlives_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HACONFORM_VM_DRIVER", raising=False)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    calls: list = []
    hung = env.KvmProbe(False, 20.0, "hung")
    env.choose_driver(kernel, tmp_path / "hacvm", probe=fake_probe(hung, calls), cache_dir=tmp_path)
    shutil.rmtree(tmp_path / "hacvm", ignore_errors=True)     # what `vm down` removes
    again = env.choose_driver(kernel, tmp_path / "hacvm", probe=fake_probe(hung, calls), cache_dir=tmp_path)
    assert len(calls) == 1 and "probe result from" in again.line


def test_the_environment_hands_vagrant_the_driver_up_chose(monkeypatch, tmp_path):
    monkeypatch.delenv("HACONFORM_VM_DRIVER", raising=False)
    vm = env.VmEnvironment.__new__(env.VmEnvironment)
    vm.dir = tmp_path
    assert vm.driver() == "qemu"      # nothing chosen yet: vagrant destroy/status need no probe boot
    vm._save(driver="kvm")
    assert vm.driver() == "kvm"


def console_of_a_boot(marker: bool) -> str:
    lines = ["[    1.720357] Run /init as init process"]
    if marker:
        lines.append(env.KVM_PROBE_MARKER)
    return "\n".join(lines) + "\n"


def test_judge_probe_reads_marker_hang_and_qemu_error():
    booted = env.judge_probe(env.ProbeRun(True, 0.9, 0, console_of_a_boot(True)), 20)
    assert booted.usable and booted.seconds == 0.9
    hung = env.judge_probe(env.ProbeRun(False, 20.0, None, "Probing EDD (edd=off to disable)... ok\n"), 20)
    assert not hung.usable and "within 20s" in hung.why and "Probing EDD" in hung.why
    silent = env.judge_probe(env.ProbeRun(False, 20.0, None, ""), 20)
    assert "nothing on the serial console" in silent.why
    # what -cpu host did here: the PVM host refuses IA32_ARCH_CAPABILITIES and qemu aborts
    refused = env.judge_probe(env.ProbeRun(False, 0.1, -6, "", "qemu-system-x86_64: error: failed to set MSR "
                                           "0x10a to 0x69\nkvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n"), 20)
    assert not refused.usable and "exited -6" in refused.why and "kvm_buf_set_msrs" in refused.why


def read_newc(data: bytes) -> dict[str, tuple[int, tuple[int, int], bytes]]:
    """A cpio newc archive -> {name: (mode, (rdevmajor, rdevminor), data)}, as the kernel unpacks it."""
    members, offset = {}, 0
    while True:
        assert data[offset:offset + 6] == b"070701", f"no newc magic at {offset}"
        fields = [int(data[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_start = offset + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return members
        members[name] = (mode, rdev, data[body:body + size])
        offset = body + size + (-size % 4)


def test_probe_initramfs_holds_init_its_shell_and_a_console(tmp_path):
    members = read_newc(env.probe_initramfs(tmp_path / "probe.cpio").read_bytes())
    assert members["init"][2].decode() == env.PROBE_INIT and members["init"][0] & 0o111
    assert members["dev/console"][:2] == (0o020600, (5, 1))
    assert members["bin/sh"][2] == Path("/bin/sh").resolve().read_bytes()
    for library in env.shared_libraries("/bin/sh"):
        assert members[library.lstrip("/")][2][:4] == b"\x7fELF"


@pytest.fixture
def kvm_device(monkeypatch, tmp_path):
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    monkeypatch.setattr(env, "KVM_DEVICE", device)
    monkeypatch.setattr(env, "QEMU", "sh")     # present everywhere; the fake runner never starts it
    return device


def test_probe_boots_the_box_kernel_like_the_guests_and_reads_the_console(kvm_device, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    seen = {}

    def runner(argv, console, bound):
        seen.update(argv=argv, bound=bound)
        console.write_text(console_of_a_boot(True))
        return env.ProbeRun(True, 1.2, 0, console.read_text())
    probe = env.probe_kvm(kernel, tmp_path / "state", runner=runner)
    assert probe == env.KvmProbe(True, 1.2, "KVM booted the box's kernel to userspace in 1.2s")
    argv = " ".join(seen["argv"])
    assert "-accel kvm -cpu qemu64 -machine pc" in argv and f"-kernel {kernel}" in argv
    assert "-nic none" in argv and "-no-reboot" in argv and "panic=-1" in argv
    assert seen["bound"] == env.KVM_PROBE_BOUND_S
    assert read_newc((tmp_path / "state" / "kvm-probe.cpio").read_bytes())["init"][2] == env.PROBE_INIT.encode()


def test_probe_without_dev_kvm_or_kernel_boots_nothing(kvm_device, tmp_path):
    def runner(*_):
        raise AssertionError("nothing to boot")
    kernel = tmp_path / "vmlinuz"
    missing_kernel = env.probe_kvm(kernel, tmp_path, runner=runner)
    assert not missing_kernel.usable and "box build" in missing_kernel.why
    kernel.write_bytes(b"kernel")
    kvm_device.unlink()
    no_device = env.probe_kvm(kernel, tmp_path, runner=runner)
    assert not no_device.usable and str(kvm_device) in no_device.why


def kernel_to_boot() -> Path | None:
    """A kernel image on this machine: HACONFORM_TEST_KERNEL, the box's, or the running one's."""
    import os
    for candidate in (os.environ.get("HACONFORM_TEST_KERNEL"), env.BoxFiles(env.BOX_DIR).kernel,
                      f"/boot/vmlinuz-{os.uname().release}"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(shutil.which(env.QEMU) is None, reason="qemu-system-x86_64 not installed (`haconform vm install`)")
@pytest.mark.skipif(kernel_to_boot() is None, reason="no kernel image to boot: no box built (haconform vm box build), "
                    "no /boot/vmlinuz-$(uname -r), HACONFORM_TEST_KERNEL unset")
def test_the_probe_guest_reaches_userspace_under_tcg(tmp_path):
    # TCG, not KVM: it boots wherever qemu runs, so this checks the probe's own machinery
    # (initramfs, marker, the guest ending qemu) and not what this machine's KVM can do.
    initrd = env.probe_initramfs(tmp_path / "probe.cpio")
    console = tmp_path / "console.log"
    run = env.run_probe_guest(env.probe_argv(kernel_to_boot(), initrd, console, accel="tcg"), console, 45)
    assert run.marker_seen, f"no marker; console ends {run.console[-300:]!r}; qemu said {run.stderr[-300:]!r}"
    assert run.console.index("Run /init as init process") < run.console.index(env.KVM_PROBE_MARKER)


# ----- guests, names, ssh-config, inventory --------------------------------------------------
def test_guests_are_the_directors_and_real_servers_named_by_fence_name(topology):
    vm = env.VmEnvironment("hctestvm", topology)
    assert vm.guests() == {"server1": "Node1", "server4": "Node4", "server2": "Node2", "server3": "Node3"}
    assert sorted(vm.lab_hosts()) == ["client", "foundation5"]


def test_environment_names_are_checked():
    with pytest.raises(HaconformError):
        env.VmEnvironment("box")
    with pytest.raises(HaconformError):
        env.VmEnvironment("Bad-Name")


def test_vagrant_ssh_config_is_renamed_to_topology_hosts():
    text = env.guest_ssh_config(VAGRANT_SSH_CONFIG, {"Node1": "server1", "Node4": "server4"})
    parsed = env.parse_ssh_config(text)
    assert set(parsed) == {"server1", "server4"}
    assert parsed["server1"]["HostName"] == "10.231.5.17"
    assert parsed["server4"]["StrictHostKeyChecking"] == "no"
    assert parsed["server4"]["IdentityFile"] == "/var/lib/haconform/vm/box/id_rsa"


def test_missing_guest_in_ssh_config_is_an_error():
    with pytest.raises(HaconformError, match="Node2"):
        env.guest_ssh_config(VAGRANT_SSH_CONFIG, {"Node1": "server1", "Node2": "server2"})


def test_inventory_loads_with_the_ssh_target_loader(topology, tmp_path):
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(env.guest_ssh_config(
        VAGRANT_SSH_CONFIG.replace("Node4", "Node2") + VAGRANT_SSH_CONFIG.replace("Node1", "Node3").split("Host Node4")[0]
        .replace("Node3", "Node3") + "\nHost Node4\n  HostName 10.231.5.40\n",
        {"Node1": "server1", "Node2": "server2", "Node3": "server3", "Node4": "server4"}))
    path = tmp_path / "inventory.yaml"
    path.write_text(env.inventory_text(topology, ssh_config, {"client": "hacvm-client"}))
    inventory = load_inventory(path, topology)
    server1 = inventory.access("server1")
    assert (server1.kind, server1.address, server1.cluster_nic, server1.ssh_config) == \
        ("ssh", "server1", "eth0", str(ssh_config))
    assert server1.power.via == "local" and "destroy Node1" in server1.power.off
    assert inventory.access("client").netns == "hacvm-client"
    assert inventory.access("foundation5").kind == "none"


# ----- box inputs ------------------------------------------------------------------------------
def test_box_carries_every_runbook_package_and_what_a_guest_needs():
    from haconform.packages import DEBIAN_PACKAGES, VM_PACKAGES
    packages = set(box.all_packages())
    assert {"haproxy", "pacemaker", "corosync", "pcs", "fence-virt", "apache2", "libapache2-mod-php"} <= packages
    assert {"openssh-server", "systemd-sysv", "linux-image-amd64", "ifupdown"} <= packages
    assert not set(box.BASE_PACKAGES) & set(box.guest_packages())
    assert not set(VM_PACKAGES) & set(DEBIAN_PACKAGES) - {"fence-virt"}


def test_box_leaves_off_what_costs_a_tcg_guest_and_makes_no_rsa_host_key(monkeypatch, tmp_path):
    commands: list[str] = []
    monkeypatch.setattr(box, "_chroot", lambda rootfs, command, what: commands.append(command))
    for directory in ("etc/network", "etc/ssh/sshd_config.d", "etc/systemd/system", "etc/apache2/conf-enabled",
                      "var/lib/dbus"):
        (tmp_path / directory).mkdir(parents=True)
    box.configure_rootfs(tmp_path, "ssh-rsa AAAA haconform-vm")
    [command] = commands
    for unit in ("e2scrub_reap.service", "logd.service", "apt-daily.timer", "logrotate.timer", "phpsessionclean.timer"):
        assert unit in box.UNITS_OFF and unit in command
    hostkeys = (tmp_path / "etc/systemd/system/haconform-hostkeys.service").read_text()
    assert "-t ed25519" in hostkeys and "-t ecdsa" in hostkeys and "rsa" not in hostkeys and "-A" not in hostkeys
    sshd = (tmp_path / "etc/ssh/sshd_config.d/haconform.conf").read_text()
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in sshd and "rsa" not in sshd


def test_box_input_hash_changes_with_each_input():
    base = box.BoxInputs(packages=("a", "b"), builder_source="s", kernel_version="6.1", ssh_public_key="ssh-rsa K")
    assert base.digest() == box.BoxInputs(("a", "b"), "s", "6.1", "ssh-rsa K\n").digest()
    for changed in (replace(base, packages=("a", "c")), replace(base, builder_source="t"),
                    replace(base, kernel_version="6.2"), replace(base, ssh_public_key="ssh-rsa L")):
        assert changed.digest() != base.digest()


def test_box_metadata_is_a_libvirt_qcow2_box():
    assert box.box_metadata(4) == {"provider": "libvirt", "format": "qcow2", "virtual_size": 4}


def test_apt_mirror_read_from_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert box.apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert box.apt_mirror(tmp_path) == "http://old.example/debian"
    (tmp_path / "sources.list").write_text("deb http://old.example/debian bullseye main\n")
    with pytest.raises(HaconformError, match="bookworm"):
        box.apt_mirror(tmp_path)


# ----- the Vagrantfile (Ruby side) -----------------------------------------------------------------
VAGRANT_STUB = r'''
module Vagrant
  def self.configure(_version)
    recorder = Recorder.new([])
    yield recorder
  end
end
class Recorder
  def initialize(path) = @path = path
  def method_missing(name, *args, **kw, &block)
    if name.to_s.end_with?("=")
      puts "SET #{(@path + [name.to_s.chomp("=")]).join(".")}=#{args[0]}"
      return
    end
    puts "CALL #{(@path + [name.to_s]).join(".")} #{args.inspect} #{kw.inspect}" if %w[define network].include?(name.to_s)
    puts "SHELL #{kw[:inline].lines.grep(/address|route|enable|hostname /).map(&:strip).join(" ; ")}" if kw[:inline]
    child = Recorder.new(@path + [name.to_s])
    block&.call(child)
    child
  end
  def respond_to_missing?(*) = true
end
load ARGV[0]
'''


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby (comes with vagrant) not installed")
def test_vagrantfile_maps_the_topology(tmp_path):
    stub = tmp_path / "stub.rb"
    stub.write_text(VAGRANT_STUB)
    out = subprocess.run(["ruby", str(stub), str(REPO / "Vagrantfile")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HACONFORM_VM_NAME": "hctest"}, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    defines = [line.split()[2] for line in lines if line.startswith("CALL vm.define ")]
    assert defines == ['["Node1"]', '["Node4"]', '["Node2"]', '["Node3"]']
    settings = dict(line[4:].split("=", 1) for line in lines if line.startswith("SET "))
    assert settings["vm.provider.driver"] == "qemu"
    assert settings["vm.provider.cpu_model"] == "qemu64"
    assert settings["vm.provider.graphics_type"] == "none"
    assert settings["vm.provider.management_network_mode"] == "none"
    assert settings["vm.provider.default_prefix"] == ""
    assert not ipaddress.IPv4Network(settings["vm.provider.management_network_address"]).overlaps(LAB_RANGE)
    assert 512 <= int(settings["vm.provider.memory"]) <= 768
    networks = [line for line in lines if line.startswith("CALL vm.define.vm.network")]
    assert len(networks) == 4
    assert all(':dev=>"hcbr-hctest"' in n and ":auto_config=>false" in n and ":type=>\"bridge\"" in n
               and ':slot=>"0x04"' in n for n in networks)
    assert settings["vm.provider.management_network_pci_slot"] == "0x06"
    shells = [line for line in lines if line.startswith("SHELL")]
    assert any("address 172.25.5.1/24" in s and "224.0.0.0/4 dev eth0" in s and "hostname server1" in s
               for s in shells)
    assert any("address 172.25.5.3/24" in s and "enable --now rsyslog apache2" in s for s in shells)


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby (comes with vagrant) not installed")
@pytest.mark.parametrize("requested, domain_type", [("auto", "qemu"), ("qemu", "qemu"), ("kvm", "kvm")])
def test_vagrantfile_domain_type_is_kvm_only_when_asked_for(tmp_path, requested, domain_type):
    stub = tmp_path / "stub.rb"
    stub.write_text(VAGRANT_STUB)
    out = subprocess.run(["ruby", str(stub), str(REPO / "Vagrantfile")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HACONFORM_VM_NAME": "hctest", "HACONFORM_VM_DRIVER": requested})
    assert out.returncode == 0, out.stderr
    assert f"SET vm.provider.driver={domain_type}" in out.stdout.splitlines()


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed (`haconform vm install`)")
def test_vagrant_itself_accepts_the_vagrantfile(tmp_path):
    result = subprocess.run(["vagrant", "validate", "--ignore-provider"], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VAGRANT_CWD": str(REPO),
                                 "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_CHECKPOINT_DISABLE": "1",
                                 "HACONFORM_VM_NAME": "hctest"})
    assert result.returncode == 0, result.stderr or result.stdout
    assert "validated successfully" in result.stdout


# ----- VagrantTarget's view of power, from libvirt's (faked here) -----------------------------
@pytest.fixture
def fake_libvirt(monkeypatch, topology):
    from haconform.targets import vagrant as vagrant_target
    domains = {"Node1": {"state": "running", "id": "3"}}
    monkeypatch.setattr(vagrant_target.libvirt, "domain_state", lambda d: domains.get(d, {}).get("state"))
    monkeypatch.setattr(vagrant_target.libvirt, "domain_id", lambda d: domains.get(d, {}).get("id"))
    target = vagrant_target.VagrantTarget(topology, "hctestvm")
    answers = {"server1": "boot-1"}
    monkeypatch.setattr(target.guests, "answers", lambda name, timeout=0: answers.get(name))
    yield target, domains, answers
    shutil.rmtree(target.guests._control_path, ignore_errors=True)


def test_power_state_tells_a_crash_from_a_fenced_reboot(fake_libvirt):
    target, domains, answers = fake_libvirt
    assert target.power_state("server1") == "on"
    target.guests._crash_domain_ids["server1"] = "3"  # what power(crash) records
    answers.pop("server1")
    assert target.power_state("server1") == "crashed"  # libvirt still says running: a panicked guest
    domains["Node1"]["id"] = "4"                       # fence_virtd's reboot: destroy + start
    assert target.power_state("server1") == "on"
    domains["Node1"]["state"] = "shut off"
    assert target.power_state("server1") == "off"


def test_guests_go_over_ssh_and_the_rest_through_the_lab(fake_libvirt):
    target, _, _ = fake_libvirt
    assert target.is_guest("server2") and not target.is_guest("client")
    assert target.inventory.access("server1").cluster_nic == "eth0"
    assert target.inventory.access("server1").ssh_config.endswith("/hctestvm/ssh_config")
    assert target.fence_key_path("/etc/cluster/fence_xvm.key").endswith("/labs/hctestvm/hosts/foundation5/upper/etc/cluster/fence_xvm.key")


def test_each_host_call_goes_to_the_target_owning_the_host(fake_libvirt, monkeypatch):
    from haconform.targets.lab import LabTarget
    from haconform.targets.vagrant import LibvirtGuests
    target, _, _ = fake_libvirt
    assert isinstance(target._for("server1"), LibvirtGuests) and isinstance(target._for("foundation5"), LabTarget)
    assert target.lab_target.lab is target.lab and sorted(target.lab.only_hosts) == ["client", "foundation5"]
    calls = []
    for owner in (target.guests, target.lab_target):
        for method in ("testinfra_host", "_exec_prefix", "transport_kind", "power_state", "nic_state", "booted"):
            monkeypatch.setattr(owner, method,
                                lambda name, m=method, o=owner, **_: calls.append((o.kind, m, name)) or [])
        for method in ("_power", "_set_nic"):
            monkeypatch.setattr(owner, method, lambda name, arg, m=method, o=owner: calls.append((o.kind, m, name, arg)))
    for name in ("server4", "client"):
        target.testinfra_host(name), target.program_argv(name, ["true"]), target.transport_kind(name)
        target.power_state(name), target.nic_state(name), target.booted(name), target.power(name, "crash")
        target.set_nic(name, "down")
    kinds = {name: {c[0] for c in calls if c[2] == name} for name in ("server4", "client")}
    assert kinds == {"server4": {"vagrant-guests"}, "client": {"lab"}}
    assert len(calls) == 16


def test_guests_are_reached_over_ssh_and_lab_hosts_through_nsenter(fake_libvirt):
    target, _, _ = fake_libvirt
    assert "ssh_exec.py" in " ".join(target.program_argv("server2", ["true"]))
    assert target.testinfra_host("server2").backend.NAME == "haconform-access"
    assert target.testinfra_host("client").backend.NAME == "haconform-lab"
    assert target.inventory is target.guests.inventory and target.inventory.access("client").kind == "none"


def test_a_guest_cut_off_has_an_absent_nic(fake_libvirt, monkeypatch):
    from haconform.targets.access import HostUnreachable
    from haconform.targets.inventory_target import InventoryTarget
    target, _, _ = fake_libvirt

    def unreachable(self, name):
        raise HostUnreachable(f"ssh to {name} failed")
    monkeypatch.setattr(InventoryTarget, "nic_state", unreachable)
    assert target.nic_state("server1") == "absent"
