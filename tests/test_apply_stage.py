"""apply_stage on fake hosts: only files that differ are validated and written, every candidate is validated
on every host before any host is written, and a second pass validates and writes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from haconform.errors import HaconformError
from haconform.stages.files import apply_stage
from haconform.stages.model import load_stage
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
DOCUMENTED = REPO / "fixtures" / "documented"
STAGE1 = load_stage(DOCUMENTED / "stage1", TOPOLOGY, search=(DOCUMENTED,))


class FileHost:
    """A host holding files in a dict; its services enabled and running; a validator that refuses on demand."""

    def __init__(self, name: str, events: list, *, refuses: bool = False):
        self.name, self.events, self.refuses = name, events, refuses
        self.files: dict[str, bytes] = {}
        self.host = SimpleNamespace(service=lambda _: SimpleNamespace(is_enabled=True, is_running=True))

    def execute(self, command: str):
        if command.startswith("sha256sum "):
            path = command.split()[1]
            data = self.files.get(path)
            return SimpleNamespace(rc=0 if data is not None else 1,
                                   stdout=f"{hashlib.sha256(data).hexdigest()}  {path}\n" if data is not None else "")
        if command.startswith("rm -rf "):
            return SimpleNamespace(rc=0, stdout="", stderr="")
        self.events.append(("validate", self.name, command.split()[0]))
        return SimpleNamespace(rc=1 if self.refuses else 0, stdout="", stderr="refused on purpose")

    def succeed(self, command: str) -> str:
        if command.startswith("mktemp -d"):
            return "/tmp/haconform-validate.fake\n"
        self.events.append(("command", self.name, command))
        return ""

    def write_file(self, path: str, data: bytes, **_):
        if not path.startswith("/tmp/haconform-validate.fake/"):
            self.events.append(("write", self.name, path))
            self.files[path] = data


def hosts_of(stage, events, refusing=()):
    names = {*stage.plan(TOPOLOGY), *(h for selector in stage.services for h in stage.hosts_for(selector, TOPOLOGY))}
    return {name: FileHost(name, events, refuses=name in refusing) for name in names}


def test_the_first_pass_validates_and_writes_what_differs_and_the_second_pass_neither():
    events: list = []
    machines = hosts_of(STAGE1, events)
    first = apply_stage(STAGE1, machines, TOPOLOGY)
    validated = [e for e in events if e[0] == "validate"]
    writes = [e for e in events if e[0] == "write"]
    assert first.changed_anything and writes and validated
    # Every validation came before the first write: a refused candidate would change no host.
    assert max(events.index(e) for e in validated) < min(events.index(e) for e in writes)
    assert {(e[1], e[2]) for e in writes} == {(h, f.dest) for h, files in STAGE1.plan(TOPOLOGY).items() for f in files}
    events.clear()
    second = apply_stage(STAGE1, machines, TOPOLOGY)
    assert not second.changed_anything, second.summary()
    assert events == [], "nothing to replace: nothing validated, written or acted on"


def test_a_changed_file_is_validated_again_and_only_it_is_written():
    events: list = []
    machines = hosts_of(STAGE1, events)
    apply_stage(STAGE1, machines, TOPOLOGY)
    machines["server1"].files["/etc/haproxy/haproxy.cfg"] = b"# changed by hand\n"
    events.clear()
    result = apply_stage(STAGE1, machines, TOPOLOGY)
    assert [e for e in events if e[0] == "validate"] == [("validate", "server1", "haproxy")]
    assert [e for e in events if e[0] == "write"] == [("write", "server1", "/etc/haproxy/haproxy.cfg")]
    assert result.actions["server1"] == ["reloaded haproxy"]


def test_a_candidate_refused_on_one_host_changes_no_host():
    events: list = []
    machines = hosts_of(STAGE1, events, refusing={"server4"})
    with pytest.raises(HaconformError, match="refused on purpose") as caught:
        apply_stage(STAGE1, machines, TOPOLOGY)
    assert caught.value.where and caught.value.where.endswith("haproxy.cfg"), caught.value.where
    assert not [e for e in events if e[0] in ("write", "command")], events
