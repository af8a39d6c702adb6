"""Stage 4 (实现高可用) and stage 5 (Fence机制) applied as the runbook does them.

The runbook is a sequence of pcs commands, not files, so these appliers are
code: each step first reads whether it is already done (pcsd's known-hosts,
corosync.conf, the CIB, crm_mon XML) and acts only when it is not, so a
second application changes nothing.  Every step taken is returned for the
report.  pcs's dialect (0.9 as in the runbook, or 0.10+) is detected.
"""

from __future__ import annotations

import json
import shlex
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from . import secrets
from .errors import HaconformError
from .readers.cluster import read_cluster_state, read_crm_verify, read_pcs_dialect
from .timeouts import BOUNDS
from .wait import wait_until

GROUP = "hagroup"
VIP_RESOURCE = "VIP"
HAPROXY_RESOURCE = "haproxy"
STONITH_RESOURCE = "vmfence"
VIP_MONITOR = "30s"
HAPROXY_MONITOR = "60s"
FENCE_MONITOR = "30s"
# Debian's corosync package ships a sample corosync.conf for a node called
# "node1"; pcs then believes the host is in that cluster and refuses to set up
# another.  A file with this marker is the sample, not a deployment's.
DEBIAN_SAMPLE_MARK = "cluster_name: debian"


@dataclass
class StageRecord:
    stage: str
    steps: list[str] = field(default_factory=list)
    observations: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        return bool(self.steps)


def cluster_property(machine, name: str) -> str | None:
    """A cluster option's value from the CIB (XML), None when unset."""
    result = machine.execute("cibadmin --query --scope crm_config")
    if result.rc != 0:
        return None
    for nvpair in ET.fromstring(result.stdout).iter("nvpair"):
        if nvpair.get("name") == name:
            return nvpair.get("value")
    return None


def primitive_ids(machine) -> set[str]:
    result = machine.execute("cibadmin --query --scope resources")
    if result.rc != 0:
        return set()
    root = ET.fromstring(result.stdout)
    return {p.get("id") for p in root.iter("primitive")} | {g.get("id") for g in root.iter("group")}


def group_members_in_cib(machine, group: str) -> list[str]:
    result = machine.execute("cibadmin --query --scope resources")
    if result.rc != 0:
        return []
    for g in ET.fromstring(result.stdout).iter("group"):
        if g.get("id") == group:
            return [p.get("id") for p in g.findall("primitive")]
    return []


def resource_op_interval(machine, resource: str, op: str = "monitor") -> float | None:
    """The configured interval of an operation, in seconds (read from the CIB)."""
    result = machine.execute("cibadmin --query --scope resources")
    if result.rc != 0:
        return None
    for primitive in ET.fromstring(result.stdout).iter("primitive"):
        if primitive.get("id") == resource:
            for operation in primitive.iter("op"):
                if operation.get("name") == op:
                    return _pcmk_seconds(operation.get("interval", "0"))
    return None


def _pcmk_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


class ClusterStage:
    """Stage 4: pacemaker + corosync + pcs on the directors, VIP and haproxy as one group."""

    name = "stage4"

    def __init__(self, deployment, password: str):
        self.deployment = deployment
        self.topology = deployment.topology
        self.nodes = [deployment.machine(n) for n in self.topology.cluster_nodes]
        self.password = password
        secrets.register(password)

    @property
    def first(self):
        return self.nodes[0]

    def state(self):
        return read_cluster_state(self.first.host)

    def formed(self):
        try:
            state = self.state()
        except HaconformError:
            return None
        names = {n.name for n in self.nodes}
        return state if (state.quorum and state.dc and names <= set(state.online_nodes)) else None

    def apply(self) -> StageRecord:
        record = StageRecord(self.name)
        began = time.monotonic()
        dialect = read_pcs_dialect(self.first.host)
        record.observations["pcs"] = {"version": ".".join(map(str, dialect.version)), "dialect": dialect.name}
        node_names = [n.name for n in self.nodes]

        for node in self.nodes:
            conf = node.execute("cat /etc/corosync/corosync.conf 2>/dev/null").stdout
            if DEBIAN_SAMPLE_MARK in conf:
                node.succeed("rm -f /etc/corosync/corosync.conf")
                record.steps.append(f"{node.name}: removed Debian's sample corosync.conf")
            if not self._password_works(node):
                node.succeed(f"echo {shlex.quote('hacluster:' + self.password)} | chpasswd")
                record.steps.append(f"{node.name}: hacluster password set")
            for service in ("pcsd-ruby", "pcsd"):
                svc = node.host.service(service)
                if not svc.is_enabled:
                    node.succeed(f"systemctl enable {service}")
                    record.steps.append(f"{node.name}: enabled {service}")
                if not svc.is_running:
                    node.succeed(f"systemctl start {service}")
                    record.steps.append(f"{node.name}: started {service}")
            # HAProxy becomes the cluster's to start: the init system must not start it too.
            if node.host.service("haproxy").is_enabled:
                node.succeed("systemctl disable haproxy")
                record.steps.append(f"{node.name}: haproxy no longer started at boot (the cluster starts it)")
        for node in self.nodes:
            wait_until(f"pcsd answers on {node.name}",
                       lambda n=node: n.execute("ss -Htln sport = :2224").stdout.strip(),
                       timeout=BOUNDS.pcsd_ready)

        if not self._known_hosts(self.first) >= set(node_names):
            self.first.succeed(shlex.join(dialect.auth_argv(node_names)) + " -p " + shlex.quote(self.password))
            record.steps.append(f"pcs {'cluster' if dialect.name == '0.9' else 'host'} auth {' '.join(node_names)}")

        cluster_name = self.topology.cluster_name
        if f"cluster_name: {cluster_name}" not in self.first.execute("cat /etc/corosync/corosync.conf 2>/dev/null").stdout:
            self.first.succeed(shlex.join(dialect.setup_argv(cluster_name, node_names)))
            record.steps.append(f"pcs cluster setup {cluster_name} {' '.join(node_names)}")
        if not all(n.host.service("corosync").is_running and n.host.service("pacemaker").is_running
                   for n in self.nodes):
            self.first.succeed("pcs cluster start --all")
            record.steps.append("pcs cluster start --all")
        if not all(n.host.service("corosync").is_enabled and n.host.service("pacemaker").is_enabled
                   for n in self.nodes):
            self.first.succeed("pcs cluster enable --all")
            record.steps.append("pcs cluster enable --all")
        wait_until(f"cluster {cluster_name} formed: quorum, a DC, {node_names} online", self.formed,
                   timeout=BOUNDS.cluster_form, observe=self._describe)

        if cluster_property(self.first, "stonith-enabled") != "false":
            verify = read_crm_verify(self.first.host)
            record.observations["crm_verify before stonith-enabled=false"] = {
                "valid": verify.valid, "errors": list(verify.errors)}
            self.first.succeed("pcs property set stonith-enabled=false")
            record.steps.append("pcs property set stonith-enabled=false")
        existing = primitive_ids(self.first)
        vip, prefix = self.topology.vip, self.topology.prefixlen
        if VIP_RESOURCE not in existing:
            self.first.succeed(f"pcs resource create {VIP_RESOURCE} ocf:heartbeat:IPaddr2 ip={vip} "
                               f"cidr_netmask={prefix} op monitor interval={VIP_MONITOR}")
            record.steps.append(f"pcs resource create {VIP_RESOURCE} ocf:heartbeat:IPaddr2")
        if HAPROXY_RESOURCE not in existing:
            self.first.succeed(f"pcs resource create {HAPROXY_RESOURCE} {self.haproxy_agent()} "
                               f"op monitor interval={HAPROXY_MONITOR}")
            record.steps.append(f"pcs resource create {HAPROXY_RESOURCE} {self.haproxy_agent()}")
        if group_members_in_cib(self.first, GROUP) != [VIP_RESOURCE, HAPROXY_RESOURCE]:
            self.first.succeed(f"pcs resource group add {GROUP} {VIP_RESOURCE} {HAPROXY_RESOURCE}")
            record.steps.append(f"pcs resource group add {GROUP} {VIP_RESOURCE} {HAPROXY_RESOURCE}")
        wait_until(f"{GROUP} started on one director", self.group_node,
                   timeout=BOUNDS.cluster_settle, observe=self._describe)
        verify = read_crm_verify(self.first.host)
        record.observations["crm_verify after"] = {"valid": verify.valid, "errors": list(verify.errors)}
        record.seconds = round(time.monotonic() - began, 2)
        return record

    def haproxy_agent(self) -> str:
        """The runbook's systemd:haproxy where systemd runs, else service:haproxy."""
        runs_systemd = self.first.execute("test -d /run/systemd/system").rc == 0
        return "systemd:haproxy" if runs_systemd else "service:haproxy"

    def group_node(self) -> str | None:
        """The one node running every member of the group, else None."""
        try:
            state = self.state()
            nodes = [state.where_is(member) for member in (VIP_RESOURCE, HAPROXY_RESOURCE)]
        except (HaconformError, KeyError):
            return None
        if all(len(n) == 1 for n in nodes) and nodes[0] == nodes[1]:
            return nodes[0][0]
        return None

    def _describe(self) -> str:
        try:
            state = self.state()
        except HaconformError as exc:
            return str(exc)
        return (f"quorum={state.quorum} dc={state.dc} online={state.online_nodes} "
                f"resources={[(r.id, r.role, r.nodes) for r in state.resources]} "
                f"failures={[(f.resource, f.node, f.status) for f in state.failures]}")

    def _password_works(self, node) -> bool:
        # pcsd checks the password through PAM; so does this, without printing it.
        code = ("import crypt,spwd,sys;e=spwd.getspnam('hacluster').sp_pwdp;"
                "sys.exit(0 if crypt.crypt(sys.stdin.read(),e)==e else 1)")
        result = node.execute(f"printf %s {shlex.quote(self.password)} | python3 -W ignore -c {shlex.quote(code)}")
        return result.rc == 0

    @staticmethod
    def _known_hosts(node) -> set[str]:
        result = node.execute("cat /var/lib/pcsd/known-hosts 2>/dev/null")
        try:
            return set(json.loads(result.stdout).get("known_hosts", {}))
        except ValueError:
            return set()


class FencingStage:
    """Stage 5: fence_xvm against the fence host, STONITH enabled."""

    name = "stage5"

    def __init__(self, deployment, target, cluster: ClusterStage):
        self.deployment = deployment
        self.target = target
        self.cluster = cluster
        self.fence_conf = deployment.topology.fence
        self.key_path = self.fence_conf.get("key_file", "/etc/cluster/fence_xvm.key")

    def host_map(self) -> str:
        return ";".join(f"{m.name}:{m.fence_name}" for m in self.cluster.nodes)

    def fence_list(self, director) -> dict[str, str]:
        """`fence_xvm -o list` on a director: domain -> state."""
        result = director.execute("fence_xvm -o list -t 5")
        if result.rc != 0:
            return {}
        return {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if len(line.split()) >= 3}

    def apply(self) -> StageRecord:
        record = StageRecord(self.name)
        began = time.monotonic()
        fence, key_path = self.deployment.fence_host, self.key_path
        if fence is None:
            raise HaconformError("no fence host in the topology", where=str(self.deployment.topology.path),
                                 fix="add a host with `role: fence`")
        if not fence.host.file(key_path).exists:
            # The runbook's own command on the physical host.
            fence.succeed(f"mkdir -p /etc/cluster && dd if=/dev/urandom of={key_path} bs=128 count=1 2>/dev/null"
                          f" && chmod 600 {key_path}")
            record.steps.append(f"{fence.name}: made a 128-byte key with dd")
        key = fence.host.file(key_path).content
        secrets.register(key)
        secrets.register(key.hex())
        import base64
        secrets.register(base64.b64encode(key).decode())
        digest = fence.succeed(f"sha256sum {key_path}").split()[0]
        for director in self.cluster.nodes:
            have = director.execute(f"sha256sum {key_path} 2>/dev/null").stdout.split()
            if not have or have[0] != digest:
                director.succeed("mkdir -p /etc/cluster")
                director.write_file(key_path, key, mode="0600")
                record.steps.append(f"{director.name}: key copied to {key_path}")
        if not self.target.fence_device_running() or record.steps:
            info = self.target.start_fence_device(
                key, multicast_address=self.fence_conf.get("multicast_address", "225.0.0.12"),
                port=int(self.fence_conf.get("port", 1229)))
            record.steps.append(f"fence device started on {fence.name}")
            record.observations["fence device"] = info
        wanted = {m.fence_name for m in self.cluster.nodes}
        for director in self.cluster.nodes:
            listed = wait_until(f"`fence_xvm -o list` on {director.name} shows {sorted(wanted)}",
                                lambda d=director: (lambda got: got if wanted <= set(got) else None)(self.fence_list(d)),
                                timeout=BOUNDS.fence_request * 2)
            record.observations[f"fence_xvm -o list on {director.name}"] = listed
        first = self.cluster.first
        if STONITH_RESOURCE not in primitive_ids(first):
            first.succeed(f"pcs stonith create {STONITH_RESOURCE} fence_xvm "
                          f"pcmk_host_map={shlex.quote(self.host_map())} op monitor interval={FENCE_MONITOR}")
            record.steps.append(f"pcs stonith create {STONITH_RESOURCE} fence_xvm pcmk_host_map=\"{self.host_map()}\"")
        if cluster_property(first, "stonith-enabled") != "true":
            first.succeed("pcs property set stonith-enabled=true")
            record.steps.append("pcs property set stonith-enabled=true")
        wait_until(f"{STONITH_RESOURCE} started", lambda: self.cluster.state().where_is(STONITH_RESOURCE),
                   timeout=BOUNDS.cluster_settle, observe=self.cluster._describe)
        verify = read_crm_verify(first.host)
        record.observations["crm_verify"] = {"valid": verify.valid, "errors": list(verify.errors)}
        record.seconds = round(time.monotonic() - began, 2)
        return record
