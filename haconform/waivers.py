"""Waivers: deviations an operator accepts, with a reason and an expiry (after InSpec's waivers).

    --waivers FILE (HACONFORM_WAIVERS), or the inventory's `waivers:` (a file, or the same list inline):

    waivers:
      - id: HAC-HA-007                       # the MUST
        difference:                          # optional: the one difference accepted
          key: cluster.resources.vip.operations[monitor].interval
          found: 20s
        reason: "monitor at 20 s: the VIP moves faster; agreed with the application team"
        expires: 2027-03-01                  # the last day it counts
        ticket: OPS-1234                     # optional

The MUST's tests still run and keep their evidence.  When a case of it fails,
the waiver decides (`WaiverSet.judge`, where pytest makes the case's report):

- **waived**: the case failed by differences (haconform/differences.py:
  DifferencesFound, whose rows carry each difference's key path and found
  value) and every one of them is accepted by a waiver of that MUST: the same
  key path, and the same found value by meaning (`20s` = `20000ms`); or the
  MUST has a waiver without `difference:`, which accepts any failure of the
  test's own checks (an AssertionError: a difference, a wait that ran out).
- **broken**, as without a waiver: a difference no waiver accepts (beside an
  accepted one too), a failure that is not a difference when the waivers name
  differences, any error of the harness (a refused write, a command that could
  not run, a setup or teardown error: nothing was judged, so nothing to
  accept), and anything an expired waiver would have accepted ("waiver
  expired on ...": an expired waiver counts as nothing).

A waiver counts through its `expires` day (the run's local date).  One that
accepted or saw nothing in a run is stale: the verdict lists it.  The file is
read and checked before anything starts; a malformed one is one error naming
the file, the key and the fix.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable

from pydantic import PlainValidator, model_validator

from .conformance import ID_FORMAT
from .datafile import DataModel, fail, invalid, key_field, load_model, read_yaml_mapping

LAYOUT = "the Waivers section of docs/verify-and-waivers.md"
# Where a key path of a difference may start (haconform/stages/settings.py and the verifier's own rows).
KEY_FAMILIES = ("haproxy.cfg[", "rsyslog[", "limits.conf[", "cluster.", "fencing.", "file[", "directory[",
                "service[")
WAIVED, BROKEN = "waived", "broken"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|min|h|d)$")
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


# ----- the file's layout ---------------------------------------------------------------------------

def _text(value: Any) -> str:
    """A single value as the verifier shows it: YAML's true/false as pacemaker writes them, numbers as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise invalid("must be a single value", "quote it, e.g. \"20s\"")


def _not_empty(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise invalid("must not be empty")
    return text


def _must_id(value: Any) -> str:
    if not (isinstance(value, str) and ID_FORMAT.match(value)):
        raise invalid(f"{value!r} is not a MUST ID", "write the ID as suites/conformance.yaml has it, e.g. HAC-HA-007")
    return value


def _key_path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("must be a key path", "write the key as the failure shows it, e.g. "
                                            "cluster.resources.vip.operations[monitor].interval")
    if not value.startswith(KEY_FAMILIES):
        raise invalid(f"{value!r} is not a key path of a setting",
                      "copy the `key` of the difference from the failure or the evidence; it starts with one of "
                      + ", ".join(KEY_FAMILIES))
    return value


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise invalid(f"{value} has a time of day", "write the last day the waiver counts, e.g. 2027-03-01")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise invalid(f"{value!r} is not a date", "write YYYY-MM-DD, e.g. 2027-03-01")


Text = Annotated[str, PlainValidator(_text)]
NotEmpty = Annotated[str, PlainValidator(_not_empty)]
MustId = Annotated[str, PlainValidator(_must_id)]
KeyPath = Annotated[str, PlainValidator(_key_path)]
Date = Annotated[dt.date, PlainValidator(_date)]


class DifferenceModel(DataModel):
    key: KeyPath = key_field(kind="the difference's key path, e.g. cluster.resources.vip.operations[monitor].interval")
    found: Text = key_field(kind="the deployment's value the waiver accepts, e.g. 20s")


class WaiverModel(DataModel):
    id: MustId = key_field(kind="the MUST's ID, e.g. HAC-HA-007")
    difference: DifferenceModel | None = key_field(
        None, fix="write `difference: {key: KEY PATH, found: VALUE}`, or leave it out to accept any failure of "
                  "the MUST's checks")
    reason: NotEmpty = key_field(kind="why the deviation is accepted")
    expires: Date = key_field(kind="the last day it counts, YYYY-MM-DD")
    ticket: NotEmpty | None = None


class WaiverFileModel(DataModel):
    waivers: list[WaiverModel] = key_field(kind="a list of waivers", fix=f"write `waivers:` as a list (see {LAYOUT})")

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data):
        if isinstance(data, dict) and data.get("waivers", []) is None:
            return {**data, "waivers": []}
        return data


# ----- waivers ---------------------------------------------------------------------------------------

def same_value(accepted: str, found: str) -> bool:
    """A found value the waiver accepts: the same text (spacing aside), or the same duration in any unit."""
    a, b = " ".join(str(accepted).split()), " ".join(str(found).split())
    if a == b:
        return True
    ma, mb = _DURATION.match(a), _DURATION.match(b)
    return bool(ma and mb) and abs(float(ma[1]) * _SECONDS[ma[2]] - float(mb[1]) * _SECONDS[mb[2]]) < 1e-9


@dataclass(frozen=True)
class Waiver:
    must: str
    reason: str
    expires: dt.date
    source: str                     # "FILE: waivers[2]"
    key: str | None = None          # None: any failure of the MUST's checks
    found: str | None = None
    ticket: str | None = None

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def days_left(self, today: dt.date) -> int:
        return (self.expires - today).days

    def accepts(self, row: dict) -> bool:
        return self.key is not None and row.get("key") == self.key and same_value(self.found, row.get("found", ""))

    @property
    def difference(self) -> str:
        return f"{self.key} = {self.found}" if self.key else "any failure of its checks"

    def to_json(self, today: dt.date) -> dict:
        return {"id": self.must, "difference": {"key": self.key, "found": self.found} if self.key else None,
                "reason": self.reason, "ticket": self.ticket, "expires": self.expires.isoformat(),
                "days_left": self.days_left(today), "expired": self.expired(today), "source": self.source}


@dataclass
class Judgement:
    """What the waivers of a MUST make of one failed case."""
    outcome: str                                        # WAIVED or BROKEN
    applied: list[Waiver] = field(default_factory=list)   # the waivers that made it waived
    seen: list[Waiver] = field(default_factory=list)      # difference waivers whose difference it showed
    expired: list[Waiver] = field(default_factory=list)   # expired ones that would have accepted it
    note: str = ""                                      # why it stayed broken (empty when waived)

    def to_json(self, today: dt.date) -> dict:
        return {"outcome": self.outcome, "applied": [w.source for w in self.applied],
                "seen": [w.source for w in self.seen], "expired": [w.source for w in self.expired],
                "note": self.note,
                "waivers": [w.to_json(today) for w in self.applied or self.expired]}


def _expired_note(expired: list[Waiver]) -> str:
    return "; ".join(f"waiver expired on {w.expires.isoformat()} ({w.source}: {w.reason}): it counts for nothing"
                     for w in expired)


@dataclass
class WaiverSet:
    waivers: list[Waiver] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)    # the files (or inventory) they came from

    def __bool__(self) -> bool:
        return bool(self.waivers)

    def for_must(self, must: str) -> list[Waiver]:
        return [w for w in self.waivers if w.must == must]

    def judge(self, must: str, failure: BaseException | None, today: dt.date) -> Judgement | None:
        """A failed case of `must` (its exception, None when there is none to see): waived or broken; None
        when no waiver names the MUST."""
        from .differences import DifferencesFound

        waivers = self.for_must(must)
        if not waivers:
            return None
        active = [w for w in waivers if not w.expired(today)]
        expired = [w for w in waivers if w.expired(today)]
        if not isinstance(failure, AssertionError):
            what = type(failure).__name__ if failure is not None else "the failure"
            return Judgement(BROKEN, note=f"not waived: {what} is an error of the harness, not a finding of the "
                                          "test's checks")
        rows = failure.rows if isinstance(failure, DifferencesFound) else None
        seen = [w for w in waivers if rows and any(w.accepts(row) for row in rows)]
        whole = [w for w in active if w.key is None]
        if whole:
            return Judgement(WAIVED, applied=whole[:1], seen=seen)
        if rows:
            unaccepted = [row for row in rows if not any(w.accepts(row) for w in active)]
            if not unaccepted:
                return Judgement(WAIVED, applied=[w for w in active if any(w.accepts(r) for r in rows)], seen=seen)
            would = [w for w in expired if w.key is None or any(w.accepts(row) for row in unaccepted)]
            if would:
                return Judgement(BROKEN, seen=seen, expired=would, note=_expired_note(would))
            return Judgement(BROKEN, seen=seen, note="not waived: no waiver accepts " + "; ".join(
                f"{row.get('key') or row.get('what')} = {row.get('found')}" for row in unaccepted))
        would = [w for w in expired if w.key is None]
        if would:
            return Judgement(BROKEN, expired=would, note=_expired_note(would))
        return Judgement(BROKEN, note="not waived: the failure is not one by configuration differences, and the "
                                      "waivers of this MUST accept only " + ", ".join(w.difference for w in waivers))

    def to_json(self, today: dt.date) -> list[dict]:
        return [w.to_json(today) for w in self.waivers]


# ----- reading ----------------------------------------------------------------------------------------

def _waivers(models: Iterable[WaiverModel], where: str, prefix: str) -> list[Waiver]:
    return [Waiver(must=m.id, reason=m.reason, expires=m.expires, source=f"{where}: {prefix}[{index}]",
                   key=m.difference.key if m.difference else None,
                   found=m.difference.found if m.difference else None, ticket=m.ticket)
            for index, m in enumerate(models)]


def _no_duplicates(waivers: list[Waiver]) -> None:
    seen: dict[tuple, Waiver] = {}
    for waiver in waivers:
        identity = (waiver.must, waiver.key, waiver.found)
        if identity in seen:
            where, _, key = waiver.source.partition(": ")
            fail(where, key, f"the same waiver as {seen[identity].source} ({waiver.must}, {waiver.difference})",
                 "keep one of them")
        seen[identity] = waiver


def load_waiver_file(path: str | Path, *, option: str = "--waivers") -> list[Waiver]:
    path = Path(path)
    data = read_yaml_mapping(path, missing_fix=f"pass {option} an existing file (see {LAYOUT})", layout=LAYOUT,
                             option=option)
    model = load_model(WaiverFileModel, data, path=path, layout=LAYOUT)
    waivers = _waivers(model.waivers, str(path), "waivers")
    _no_duplicates(waivers)
    return waivers


def waivers_of_inventory(value: Any, inventory_path: Path) -> list[Waiver]:
    """The inventory's `waivers:`: a file (relative to the inventory's directory) or the list itself."""
    if isinstance(value, str):
        given = Path(value).expanduser()
        return load_waiver_file(given if given.is_absolute() else inventory_path.parent / given,
                                option="the inventory's `waivers:`")
    model = load_model(WaiverFileModel, {"waivers": value}, path=inventory_path, layout=LAYOUT)
    waivers = _waivers(model.waivers, str(inventory_path), "waivers")
    _no_duplicates(waivers)
    return waivers


def check_waivers(waivers: list[Waiver], *, musts: Iterable[str] | None, settings: Iterable[str] | None) -> None:
    """What the files alone cannot say: the MUST exists (the golden list), and a `cluster.`/`fencing.` key
    is one the stage data documents (those differences are always about a documented setting)."""
    known = set(musts) if musts is not None else None
    documented = set(settings) if settings is not None else None
    for waiver in waivers:
        where, _, key = waiver.source.partition(": ")
        if known is not None and waiver.must not in known:
            fail(where, f"{key}.id", f"{waiver.must} is not a MUST of suites/conformance.yaml",
                 "use an ID the golden list has (`haconform conformance list`)")
        if (documented is not None and waiver.key and waiver.key.startswith(("cluster.", "fencing."))
                and not waiver.key.startswith("cluster.state") and waiver.key != "fencing.device"
                and waiver.key not in documented):
            near = sorted(k for k in documented if k.split(".")[:2] == waiver.key.split(".")[:2])[:3]
            fail(where, f"{key}.difference.key", f"{waiver.key} is not a setting of the stage data",
                 "use a key path `haconform conformance coverage` lists"
                 + (f", e.g. {', '.join(near)}" if near else ""))
    _no_duplicates(waivers)


def load_waivers(files: Iterable[str | Path], *, inventory: tuple[Any, Path] | None = None) -> WaiverSet:
    """Every waiver of the run: the inventory's first, then each --waivers file."""
    waivers: list[Waiver] = []
    sources: list[str] = []
    if inventory is not None and inventory[0] is not None:
        value, path = inventory
        waivers += waivers_of_inventory(value, path)
        sources.append(f"{path} (waivers:)")
    for given in files:
        if given:
            waivers += load_waiver_file(given)
            sources.append(str(given))
    return WaiverSet(waivers, sources)
