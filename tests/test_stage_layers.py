"""Stages are layers, not copies: what each stage puts on hosts is unchanged, and no file repeats its base's.

tests/data/stage_plans.json was recorded from the stages as they were when
every stage directory was a complete copy (fixtures/documented/stage1-3 and
each fixtures/beyond/algorithms/<name>): per stage, the effective plan
(host -> target path -> sha256 of the content), validate, modes, services
(in order), provides and the other per-stage fields.  Loading the layered
stages now must give exactly that.  After an intended change to a stage,
record again with `python tests/test_stage_layers.py --record` and review the
diff of the JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from haconform.stages.model import Stage, load_stage
from haconform.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"
ALGORITHMS = REPO / "fixtures" / "beyond" / "algorithms"
RECORDED = REPO / "tests" / "data" / "stage_plans.json"
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")


def stage_dirs() -> dict[str, Path]:
    dirs = {name: DOCUMENTED / name for name in ("stage1", "stage2", "stage3", "stage4", "stage5")}
    dirs.update({f"algorithms/{d.name}": d for d in sorted(ALGORITHMS.iterdir()) if (d / "stage.yaml").is_file()})
    return dirs


def load(directory: Path) -> Stage:
    """As StageManager loads it: `base:` next to the stage first, then in the documented config dir."""
    return load_stage(directory, TOPOLOGY, search=(DOCUMENTED,))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def effective(directory: Path) -> dict:
    """What a stage means, as plain data (the format of tests/data/stage_plans.json)."""
    stage = load(directory)
    raw = yaml.safe_load((directory / "stage.yaml").read_text())
    fencing = None
    if stage.cluster is not None and stage.cluster.fencing is not None:
        fencing = dataclasses.asdict(stage.cluster.fencing)
        fencing["fence_virtd_conf"] = os.path.relpath(fencing["fence_virtd_conf"], REPO)
    return {
        "name": stage.name, "title": stage.title, "runbook_sections": stage.sections, "notes": stage.notes,
        "provides": list(stage.provides), "expectation": raw.get("expectation"),
        "plan": {host: {f.dest: sha256(f.source) for f in files}
                 for host, files in sorted(stage.plan(TOPOLOGY).items())},
        "validate": stage.validate, "modes": stage.modes,
        "services": {selector: [{"name": r.name, "on_change": r.on_change, "watches": r.watches} for r in rules]
                     for selector, rules in stage.services.items()},
        "cluster": stage.cluster_raw, "fencing": fencing,
    }


def record() -> None:
    data = {key: effective(directory) for key, directory in stage_dirs().items()}
    RECORDED.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


RECORD = json.loads(RECORDED.read_text()) if RECORDED.is_file() else {}


def test_the_recorded_stages_are_the_stages():
    assert sorted(stage_dirs()) == sorted(RECORD)


@pytest.mark.parametrize("key", sorted(stage_dirs()))
def test_stage_means_what_it_meant(key):
    now, then = effective(stage_dirs()[key]), RECORD[key]
    for field in ("plan", "validate", "modes", "services"):
        assert now[field] == then[field], f"{key}: {field} changed"
    # services: start order matters, and dict equality above ignores the selectors' order
    assert list(now["services"]) == list(then["services"]), f"{key}: services' selector order changed"
    assert now == then, f"{key}: {sorted(k for k in now if now[k] != then.get(k))} changed"


def own_files(directory: Path) -> list[tuple[str, str, Path]]:
    """(selector, dest, path) of the data files in a stage directory itself (not inherited)."""
    return sorted((sel.name, "/" + str(p.relative_to(sel)), p)
                  for sel in directory.iterdir() if sel.is_dir()
                  for p in sel.rglob("*") if p.is_file())


def layered() -> list[str]:
    return [key for key, directory in stage_dirs().items() if load(directory).base]


@pytest.mark.parametrize("key", layered())
def test_no_file_copies_what_its_base_provides(key):
    directory = stage_dirs()[key]
    stage = load(directory)
    base = load(Path(next(root / stage.base for root in (directory.parent, DOCUMENTED)
                          if (root / stage.base / "stage.yaml").is_file())))
    base_plan = {host: {f.dest: f for f in files} for host, files in base.plan(TOPOLOGY).items()}
    copies = []
    for selector, dest, path in own_files(directory):
        same_key = base.file(selector, dest)
        if same_key is not None and same_key.source.read_bytes() == path.read_bytes():
            copies.append(f"{path.relative_to(REPO)} = {same_key.source.relative_to(REPO)}")
            continue
        # also a role- file that every host of the role already gets, byte for byte, from a host- file of the base
        hosts = stage.hosts_for(selector, TOPOLOGY)
        theirs = [base_plan.get(host, {}).get(dest) for host in hosts]
        if hosts and all(f is not None and f.source.read_bytes() == path.read_bytes() for f in theirs):
            copies.append(f"{path.relative_to(REPO)} = what {base.name} gives {', '.join(hosts)}")
    assert not copies, f"{key} repeats files its base {stage.base} provides: {copies}"


@pytest.mark.parametrize("key", [k for k in stage_dirs() if k.startswith("algorithms/")])
def test_an_algorithm_is_stage1_with_its_own_haproxy_cfg(key):
    directory = stage_dirs()[key]
    stage = load(directory)
    assert stage.base == "stage1"
    assert [(s, d) for s, d, _ in own_files(directory)] == [("role-director", "/etc/haproxy/haproxy.cfg")]
    stage1 = load(DOCUMENTED / "stage1")
    for f in stage.files:
        expected_dir = directory if f.dest == "/etc/haproxy/haproxy.cfg" else DOCUMENTED / "stage1"
        assert f.source.is_relative_to(expected_dir), f"{f.selector}{f.dest} from {f.source}"
    assert sorted((f.selector, f.dest) for f in stage.files) == sorted((f.selector, f.dest) for f in stage1.files)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(f"usage: python {sys.argv[0]} --record   (rewrites {RECORDED.relative_to(REPO)})")
    record()
