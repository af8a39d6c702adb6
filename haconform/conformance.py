"""Conformance metadata: every suite test carries a stable ID and a MUST.

    @conformance("HAC-RR-001", stage="stage1", section="配置文件实例",
                 must="Consecutive requests through the frontend MUST alternate app1, app2.")
    def test_round_robin_alternates(...): ...

IDs are permanent (a test that changes meaning gets a new ID, the old one is
retired, never reused).  suites/conformance.yaml is the golden list, checked
in and reviewed when it changes; tests/test_conformance_list.py keeps it
equal to what the suites declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

ID_FORMAT = re.compile(r"^HAC-[A-Z0-9]+-\d{3}$")


@dataclass(frozen=True)
class Requirement:
    id: str
    must: str
    section: str
    stage: str
    destructive: bool = False


def conformance(id: str, *, must: str, section: str, stage: str, destructive: bool = False):
    if not ID_FORMAT.match(id):
        raise ValueError(f"conformance id {id!r} does not match HAC-AREA-NNN")
    if " MUST " not in f" {must} ":
        raise ValueError(f"{id}: the statement must say MUST: {must!r}")
    requirement = Requirement(id, must, section, stage, destructive)

    def mark(fn):
        fn = pytest.mark.conformance(requirement)(fn)
        if destructive:
            fn = pytest.mark.destructive(fn)
        return fn

    return mark


def requirement_of(item) -> Requirement | None:
    marker = item.get_closest_marker("conformance")
    return marker.args[0] if marker else None
