"""fence_virtd on the machine, playing the runbook's physical host foundation5.

Configured as `fence_virtd -c` writes it (multicast listener on 225.0.0.12:1229,
libvirt backend on qemu:///system, key /etc/cluster/fence_xvm.key), and run in
the foreground inside the fence host's network namespace only: its multicast
socket sits on the guests' bridge through that namespace's eth0, while the
libvirt socket and the key file are read through the machine's filesystem
(the fence host's /etc is the upper directory of its overlay).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ..errors import HaconformError
from ..timeouts import BOUNDS
from ..wait import wait_until

MODULE_PATH = "/usr/lib/x86_64-linux-gnu/fence-virt"


def fence_virtd_conf(*, key_file: str, interface: str, multicast_address: str = "225.0.0.12",
                     port: int = 1229, uri: str = "qemu:///system", module_path: str = MODULE_PATH) -> str:
    """The file `fence_virtd -c` writes for the multicast listener and the libvirt backend."""
    for value in (key_file, interface, multicast_address, uri, module_path):
        if '"' in value or "\n" in value:
            raise HaconformError(f"unusable value {value!r} for fence_virtd.conf", where="fence_virtd.conf",
                                 fix="no quotes or newlines in paths and names")
    return (
        "fence_virtd {\n"
        '\tlistener = "multicast";\n'
        '\tbackend = "libvirt";\n'
        f'\tmodule_path = "{module_path}";\n'
        "}\n\n"
        "listeners {\n"
        "\tmulticast {\n"
        f'\t\tkey_file = "{key_file}";\n'
        f'\t\tinterface = "{interface}";\n'
        f'\t\tport = "{int(port)}";\n'
        f'\t\taddress = "{multicast_address}";\n'
        '\t\tfamily = "ipv4";\n'
        "\t}\n\n"
        "}\n\n"
        "backends {\n"
        "\tlibvirt {\n"
        f'\t\turi = "{uri}";\n'
        "\t}\n\n"
        "}\n"
    )


def parse_conf(text: str) -> dict[str, str]:
    """Flat view of a fence_virtd.conf: 'listeners.multicast.port' -> '1229' (for checks and tests)."""
    values, path = {}, []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.endswith("{"):
            path.append(line[:-1].strip())
        elif line == "}":
            path.pop()
        elif "=" in line:
            key, value = line.rstrip(";").split("=", 1)
            values[".".join([*path, key.strip()])] = value.strip().strip('"')
    return values


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class FenceVirtd:
    """One fence_virtd process, its config, pid and log in a state directory."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.conf = state_dir / "fence_virtd.conf"
        self.pid_file = state_dir / "fence_virtd.pid"
        self.log = state_dir / "fence_virtd.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        return pid if pid_alive(pid) and str(self.conf) in cmd else None

    def start(self, *, netns: str, key_file: str, interface: str, multicast_address: str, port: int) -> int:
        self.stop()
        if not Path(key_file).exists():
            raise HaconformError(f"no fence key at {key_file}", where="fence_virtd",
                                 fix="stage 5 writes it on the fence host first")
        self.conf.write_text(fence_virtd_conf(key_file=key_file, interface=interface,
                                              multicast_address=multicast_address, port=port))
        log = open(self.log, "a")
        proc = subprocess.Popen(
            # stdbuf: its request lines reach the log as they happen, not when a buffer fills.
            ["ip", "netns", "exec", netns, "stdbuf", "-oL", "-eL", "fence_virtd", "-F", "-f", str(self.conf),
             "-p", str(self.dir / "fence_virtd.daemon.pid"), "-d", "1"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        wait_until("fence_virtd listening on UDP port " + str(port) + f" in {netns}",
                   lambda: self._listening(netns, port) or (proc.poll() is not None and self._died()),
                   timeout=BOUNDS.vm_daemon, observe=self._log_tail)
        return proc.pid

    def _died(self):
        raise HaconformError(f"fence_virtd exited: {self._log_tail()}", where="fence_virtd",
                             fix=f"see {self.log}")

    def _listening(self, netns: str, port: int) -> bool:
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hlun", f"sport = :{port}"],
                             capture_output=True, text=True, timeout=BOUNDS.cli_query).stdout
        return bool(out.strip())

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-4:])
        except OSError:
            return "(no log)"

    def stop(self) -> bool:
        pid = self.pid()
        if not pid:
            return False
        os.killpg(pid, signal.SIGTERM)
        wait_until(f"fence_virtd ({pid}) stopped", lambda: not pid_alive(pid), timeout=BOUNDS.host_halt)
        return True
