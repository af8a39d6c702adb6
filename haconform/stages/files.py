"""Apply a stage's configuration files to a target's hosts (the stage: model.Stage).

Applying writes only files whose content differs, checks a file with its
validator (e.g. `haproxy -c`) *before* it replaces the live one, makes sure the
stage's services are enabled and running, and reloads only the services whose
watched paths changed.  Applying the same stage twice changes nothing; the
result says what changed so callers can prove that.
"""

from __future__ import annotations

import hashlib
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HaconformError
from ..redaction import redacted_tail
from ..topology import Topology
from .model import Stage, StageFile


@dataclass
class ApplyResult:
    stage: str
    changed: dict[str, list[str]] = field(default_factory=dict)   # host -> what changed
    actions: dict[str, list[str]] = field(default_factory=dict)   # host -> services acted on

    @property
    def changed_anything(self) -> bool:
        return any(self.changed.values()) or any(self.actions.values())

    def summary(self) -> str:
        if not self.changed_anything:
            return f"{self.stage}: nothing to change"
        parts = [f"{h}: {', '.join(c + self.actions.get(h, []))}"
                 for h, c in sorted(self.changed.items()) if c or self.actions.get(h)]
        return f"{self.stage}: " + "; ".join(parts)


def _sha256_on(machine, path: str) -> str | None:
    result = machine.execute(f"sha256sum {shlex.quote(path)} 2>/dev/null")
    return result.stdout.split()[0] if result.rc == 0 and result.stdout else None


def _validate(machine, stage: Stage, f: StageFile, data: bytes) -> None:
    command = stage.validate.get(f.dest)
    if not command:
        return
    # A private directory: the candidate may hold secrets (the stats password), and a
    # fixed name in /tmp could be made beforehand by another user.
    scratch = machine.succeed("mktemp -d /tmp/haconform-validate.XXXXXXXX").strip()
    try:
        candidate = f"{scratch}/{Path(f.dest).name}"
        machine.write_file(candidate, data, mode="0600")
        result = machine.execute(command.format(path=shlex.quote(candidate)))
    finally:
        machine.execute(f"rm -rf {shlex.quote(scratch)}")
    if result.rc != 0:
        message = (result.stderr + result.stdout).replace(candidate, str(f.source)).strip()
        raise HaconformError(
            f"refused by `{command.format(path=f.dest)}` on {machine.name}: {redacted_tail(message, 1500)}",
            where=str(f.source), fix="correct the file; nothing was put in place")


def apply_stage(stage: Stage, machines: dict, topology: Topology) -> ApplyResult:
    """machines: host name -> Machine.  Returns what changed, per host.

    Hosts are independent (each gets its own files, directories and services): they are applied side by
    side, each in order: files, then directories, then services (a service reloads for what changed on its
    host).  Only a file whose content differs is replaced, and every such candidate is validated first, on
    every host, before any is written: a refused file changes no host at all.  A file already in place is
    not validated again (nothing would replace it), so a second pass reads and writes nothing but the
    checksums and the services' state."""
    result = ApplyResult(stage.name)
    plan = stage.plan(topology)
    directories = {path: mode for path, mode in stage.modes.items() if mode.get("directory")}
    hosts = list(dict.fromkeys([
        *plan,
        *(h for mode in directories.values() for h in _hosts_of_selector(stage, mode.get("selector"), topology, plan)),
        *(h for selector in stage.services for h in stage.hosts_for(selector, topology))]))
    contents = {f.source: f.source.read_bytes() for files in plan.values() for f in files}
    digests = {source: hashlib.sha256(data).hexdigest() for source, data in contents.items()}

    def stale_on(host: str) -> list[StageFile]:
        machine = machines[host]
        return [f for f in plan.get(host, []) if _sha256_on(machine, f.dest) != digests[f.source]]

    def validate_on(host: str, files: list[StageFile]) -> None:
        for f in files:
            _validate(machines[host], stage, f, contents[f.source])

    stale = dict(zip(plan, _side_by_side(stage, list(plan), stale_on)))
    # A refused candidate is the file's fault, not the host's: its error names the file, whichever hosts refused it.
    _side_by_side(stage, list(stale), lambda host: validate_on(host, stale[host]), first_error_only=True)

    def apply_to(host: str) -> tuple[list[str], list[str]]:
        machine = machines[host]
        changed: list[str] = []
        for f in stale.get(host, []):
            mode = stage.modes.get(f.dest, {})
            machine.write_file(f.dest, contents[f.source], mode=str(mode.get("mode", "0644")),
                               owner=mode.get("owner", "root"), group=mode.get("group", "root"))
            changed.append(f.dest)
        for path, mode in directories.items():
            if host not in _hosts_of_selector(stage, mode.get("selector"), topology, plan):
                continue
            owner_group = f"{mode.get('owner', 'root')}:{mode.get('group', 'root')}"
            want = f"{owner_group} {int(str(mode.get('mode', '0755')), 8):o}"
            have = machine.execute(f"stat -c '%U:%G %a' {shlex.quote(path)} 2>/dev/null").stdout.strip()
            if have != want:
                machine.succeed(f"mkdir -p {shlex.quote(path)} && chown {shlex.quote(owner_group)} {shlex.quote(path)}"
                                f" && chmod {shlex.quote(str(mode.get('mode', '0755')))} {shlex.quote(path)}")
                changed.append(path + "/")
        actions: list[str] = []
        for selector, rules in stage.services.items():
            if host not in stage.hosts_for(selector, topology):
                continue
            for rule in rules:
                service = machine.host.service(rule.name)
                quoted = shlex.quote(rule.name)
                if not service.is_enabled:
                    machine.succeed(f"update-rc.d {quoted} enable")
                    actions.append(f"enabled {rule.name}")
                touched = any(c == w or c.startswith(w.rstrip("/") + "/") for c in changed for w in rule.watches)
                if not service.is_running:
                    machine.succeed(f"service {quoted} start")
                    actions.append(f"started {rule.name}")
                elif touched and rule.on_change != "none":
                    machine.succeed(f"service {quoted} {rule.on_change}")
                    actions.append(f"{rule.on_change}ed {rule.name}")
        return changed, actions

    outcomes = dict(zip(hosts, _side_by_side(stage, hosts, apply_to)))
    for host, (changed, actions) in outcomes.items():
        if host in plan or changed:
            result.changed[host] = changed
        if actions or any(host in stage.hosts_for(selector, topology) for selector in stage.services):
            result.actions[host] = actions
    return result


def _side_by_side(stage: Stage, hosts: list[str], work, *, first_error_only: bool = False) -> list:
    """work(host) for every host at once (each host's commands are independent); the results in hosts'
    order, or one error naming every host that failed (first_error_only: the first host's error as it is)."""
    with ThreadPoolExecutor(max_workers=len(hosts) or 1) as pool:
        futures = {host: pool.submit(work, host) for host in hosts}
    failed = {host: future.exception() for host, future in futures.items() if future.exception()}
    if failed:
        first = next(iter(failed.values()))
        if len(failed) == 1 or first_error_only:
            raise first
        raise HaconformError(f"{stage.name} did not apply on " + "; ".join(f"{h}: {e}" for h, e in failed.items()),
                             where=str(stage.directory), fix="see each host's error")
    return [future.result() for future in futures.values()]


def _hosts_of_selector(stage: Stage, selector: str | None, topology: Topology, plan) -> list[str]:
    if selector:
        return stage.hosts_for(selector, topology)
    return list(plan)
