"""What the stage data says about the stages as a whole: their names, their order, the last one, and the
stage that introduces each setting.  The one place that knows it; everything else asks here.

Read from each stage.yaml's own keys (stage, base, provides, title, runbook_sections, notes), validated
as model.py validates them, so a malformed file gets the same HaconformError naming the file, the key and
the fix.  Nothing else of a stage is loaded: no topology, no files, no cluster.

    documented()                  the runbook's stages (fixtures/documented/): what a --config must hold,
                                  what an inventory's `stage:` may name
    documented().names            in the runbook's order: every stage after its `base:`
    documented().last             where a deployment is unless it says otherwise
    documented().introduced_at(s) the first stage whose `provides:` lists setting s
    load_catalogue(config_dir)    the same of any directory laid out like fixtures/documented/
    report_key(label)             how reports order a MUST's `stage` label (suites/conformance.yaml)
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..datafile import fail
from ..errors import HaconformError
from .model import read_manifest

DOCUMENTED = Path(__file__).resolve().parents[2] / "fixtures" / "documented"

# Labels of the golden list's `stage` that are no single stage: a range of stages ("stage1-3": the lint of
# stages 1 to 3's configs) sorts right after its last stage; the balance algorithms (--algorithms, stages
# named algorithm-NAME) after every runbook stage; anything else after those, by name.
ALGORITHMS = "algorithms"
STAGE_RANGE = re.compile(r"^(?P<prefix>\D+)\d+-(?P<last>\d+)$")


@dataclass(frozen=True)
class StageEntry:
    """One stage as its stage.yaml describes it (its own keys: `provides:` is never inherited)."""
    name: str
    directory: Path
    base: str | None
    title: str
    sections: tuple[str, ...]
    notes: tuple[str, ...]
    provides: tuple[str, ...]


@dataclass(frozen=True)
class StageCatalogue:
    directory: Path
    stages: tuple[StageEntry, ...]        # in the runbook's order

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    @property
    def last(self) -> str:
        """The last stage: a deployment that does not say which stage it is in is taken to be in it."""
        if not self.stages:
            raise HaconformError("no stage (no */stage.yaml)", where=str(self.directory),
                                 fix="point it at a directory laid out like fixtures/documented/")
        return self.stages[-1].name

    def introduced_at(self, setting: str) -> str:
        """The first stage whose `provides:` lists the setting: where its tests run when stages are applied."""
        for stage in self.stages:
            if setting in stage.provides:
                return stage.name
        known = sorted({s for stage in self.stages for s in stage.provides})
        raise HaconformError(f"no stage provides {setting!r}", where=str(self.directory),
                             fix=f"name one of {', '.join(known)}, or add it to a stage's `provides:`")

    def settings(self) -> tuple[str, ...]:
        """Every setting some stage provides, in the order the stages introduce them."""
        return tuple(dict.fromkeys(s for stage in self.stages for s in stage.provides))

    def report_key(self, label: str) -> tuple[int, str]:
        """A sort key for a MUST's `stage` label: the stages in order, a range after its last stage, the
        balance algorithms after them all, anything else last."""
        names = list(self.names)
        if label in names:
            return 2 * names.index(label), label
        found = STAGE_RANGE.match(label)
        if found and f"{found['prefix']}{found['last']}" in names:
            return 2 * names.index(f"{found['prefix']}{found['last']}") + 1, label
        return 2 * len(names) + (0 if label == ALGORITHMS else 1), label


def load_catalogue(config_dir: str | Path) -> StageCatalogue:
    """The stages of a directory (each subdirectory holding a stage.yaml), in the runbook's order: every stage
    after its `base:`, otherwise by name; a cycle of bases is refused."""
    config_dir = Path(config_dir)
    entries: dict[str, tuple[Path, StageEntry]] = {}
    for directory in sorted(d for d in config_dir.iterdir() if (d / "stage.yaml").is_file()):
        path, manifest = read_manifest(directory)
        name = manifest.stage if manifest.stage is not None else directory.name
        entries[name] = (path, StageEntry(
            name=name, directory=directory, base=manifest.base or None, title=manifest.title,
            sections=tuple(manifest.runbook_sections or ()), notes=tuple(manifest.notes or ()),
            provides=tuple(manifest.provides)))
    # A base outside the directory (an algorithm stage's, in the documented one) orders nothing here.
    waiting = {name: entry.base for name, (_, entry) in entries.items() if entry.base in entries}
    ready = sorted(name for name in entries if name not in waiting)
    order: list[str] = []
    while ready:
        placed = ready.pop(0)
        order.append(placed)
        for name in [name for name, base in waiting.items() if base == placed]:
            del waiting[name]
            bisect.insort(ready, name)
    if waiting:     # what is left waits on a cycle: name it as model.load_stage does
        chain = [min(waiting)]
        while waiting[chain[-1]] not in chain:
            chain.append(waiting[chain[-1]])
        fail(entries[chain[-1]][0], "base", f"cycle through {' -> '.join([*chain, waiting[chain[-1]]])}",
             "a stage's base must be an earlier stage")
    return StageCatalogue(config_dir, tuple(entries[name][1] for name in order))


@lru_cache(maxsize=None)
def documented() -> StageCatalogue:
    """The runbook's stages, fixtures/documented/ (read once)."""
    return load_catalogue(DOCUMENTED)


def report_key(label: str) -> tuple[int, str]:
    """How reports order a MUST's `stage` label, by the runbook's stages."""
    return documented().report_key(label)
