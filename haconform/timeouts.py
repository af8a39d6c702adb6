"""The one table of time bounds.

Every wait in haconform takes its bound from here.  A bound is either a fixed
figure for something the runbook does not configure (a host booting), or the
interval the deployment itself documents (a monitor interval, a check timing)
plus MARGIN.  Change a figure here, never at the call site.
"""

from dataclasses import dataclass

# Added to every documented interval: covers scheduling, process start-up and
# the poll period itself on a loaded 2-core machine.
MARGIN = 15.0

# How often a bounded poll looks again.
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Bounds:
    host_boot: float = 30.0            # PID 1 up and rc2.d services started
    host_halt: float = 10.0            # processes of a host gone after power off
    service_start: float = 20.0        # an init script's daemon answers
    service_stop: float = 20.0
    command: float = 120.0             # one command inside a host
    http_request: float = 5.0          # one request from the client host
    haproxy_reload: float = 10.0       # new haproxy process serving the new config
    log_line: float = 10.0             # a syslog line written after the event
    pcsd_ready: float = 60.0
    cluster_form: float = 120.0        # corosync+pacemaker: both nodes online, DC elected
    cluster_settle: float = 90.0       # no pending actions after a change
    resource_move: float = 60.0        # standby: group started on the other node
    fence_complete: float = 120.0      # crash/split brain -> fence history success
    node_rejoin: float = 180.0         # fenced/rebooted node online again
    agent_start: float = 20.0          # client agent process answers
    probe_request: float = 1.0         # one prober request: short, so an outage is seen to ~1 s
    fence_request: float = 15.0        # fence daemon: datagram in -> called back, answered, logged
                                       # (fence_virtd's own 5 s connect + 10 s exchange steps fit)
    cli_query: float = 30.0            # one read-only query to a local daemon: haproxy's stats
                                       # socket, crm_mon, crm_verify, stonith_admin --history
    locust_exit: float = 30.0          # a locust master/worker ends after its run time (stop-timeout 2 s,
                                       # final CSV write, worker shutdown)
    dead_man: float = 800.0            # backstop of a dead-man switch whose harness link is cut without EOF:
                                       # the longest destructive test (FENCE-002) and its restore,
                                       # fence_complete + 2 resource_move + 3 node_rejoin + agent_start
    apt_lock: float = 300.0            # apt-get waiting for another dpkg to release its lock
    apt_run: float = 1800.0            # one apt-get update/install of the lab's packages
    shell_exit: float = 2.0            # a remote shell told EOF cleans its directory and exits
    vm_boot: float = 240.0             # a TCG guest: power on/reset -> ssh answers, systemd finished
    vm_up: float = 1200.0              # `vagrant up` of every guest (box upload included)
    vm_box_build: float = 1800.0       # debootstrap + image + `vagrant box add`
    vm_kvm_probe: float = 20.0         # the KVM probe: the box's kernel reaching userspace (TCG: ~5 s;
                                       # a KVM slower than this is not worth choosing)
    vm_qemu_exit: float = 10.0         # a qemu process gone after SIGKILL
    vm_daemon: float = 30.0            # libvirtd/virtlogd/virtlockd answer on their sockets
    vm_ssh: float = 20.0               # one short ssh probe to a guest over the management network


BOUNDS = Bounds()


def documented(interval_s: float) -> float:
    """Bound for waiting on something the deployment schedules every interval_s."""
    return interval_s + MARGIN
