"""The safety job's scheduling: units of work by their expected time, the longest first, each worker kept busy.

A lab test says what it takes and what it shares in its mark: `pytest.mark.lab(expected_s=N)` (measured in
CI), and `own_lab=True` when it brings up a lab of its own (a unit by itself; otherwise the file's lab tests
are one unit, in their order: they share module fixtures).  xdist's file scheduling ignores both: it orders
files by their number of tests and hands every worker two files at once, so a five-minute file can sit
behind another on one worker while a second worker is idle.  Here the units are planned the way a person
would, longest first, each to the worker with the least expected work (LPT), and a worker that runs out
takes the smallest unit planned for the worker with the most left.

The workers know the marks, the controller (which schedules) does not collect: each worker writes what it
collected, nodeid -> (unit, expected seconds), to a file the controller names in its workerinput.  Without
that file (an older worker, a crash at collection) every file is a unit, all expected alike.

xdist cannot keep a worker's next unit unplanned: a worker runs its last queued test only once it knows the
test after it (teardown needs `nextitem`), so each worker holds its running unit and one more.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

PLAN_INPUT = "haconform_test_plan"


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def unit_and_expected(item) -> tuple[str, float]:
    marker = item.get_closest_marker("lab")
    kwargs = marker.kwargs if marker else {}
    return (item.nodeid if kwargs.get("own_lab") else file_of(item.nodeid)), float(kwargs.get("expected_s", 0))


def write_plan(path: Path, plan: dict[str, tuple[str, float]]) -> None:
    """What a worker collected (nodeid -> unit, expected seconds), for the controller; written whole or not
    at all (the workers all write it)."""
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(plan))
    partial.replace(path)


def read_plan(path: Path) -> dict[str, tuple[str, float]]:
    try:
        return {nodeid: (unit, float(seconds)) for nodeid, (unit, seconds) in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError):
        return {}


def plan_units(units: dict[str, float], workers: int) -> list[list[str]]:
    """Longest first, each to the worker with the least expected work so far: one queue per worker."""
    queues: list[list[str]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for unit in sorted(units, key=lambda u: -units[u]):   # stable: equal ones keep collection order
        lightest = loads.index(min(loads))
        queues[lightest].append(unit)
        loads[lightest] += units[unit]
    return queues


def make_scheduler(config, log, plan_path: Path, clock=time.monotonic):
    from xdist.scheduler import LoadScopeScheduling

    class ExpectedTimeScheduling(LoadScopeScheduling):
        """xdist's scope scheduling, with the units and their order planned from the expected times."""

        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.plan: dict[str, tuple[str, float]] = {}
            self.expected: dict[str, float] = {}
            self.queues: dict = {}
            self.busy_until: dict = {}   # node -> when its committed units should be done (expected)

        def _split_scope(self, nodeid: str) -> str:
            return self.plan.get(nodeid, (file_of(nodeid), 0.0))[0]

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                self.plan = read_plan(plan_path)
                for nodeid in next(iter(self.registered_collections.values()), []):
                    unit = self._split_scope(nodeid)
                    self.expected[unit] = max(self.expected.get(unit, 0.0), self.plan.get(nodeid, ("", 0.0))[1])
                # xdist shuts down the nodes beyond the number of units, the last ones: none is planned for.
                active = self.nodes[:len(self.expected)]
                self.queues = dict(zip(active, plan_units(self.expected, len(active))))
            super().schedule()

        def _reschedule(self, node) -> None:
            # More work once the node is on its last test (it cannot run that one without knowing the next),
            # not before: a unit committed early waits behind the running one even when another node is free.
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) > 1:
                return
            self._assign_work_unit(node)

        def _next_unit(self, node) -> str | None:
            """The node's own next unit; when its queue is empty, the smallest unit of the node whose queue
            should end last, if it ends sooner here."""
            own = self.queues.get(node)
            if own:
                return own.pop(0)
            orphaned = next((queue for other, queue in self.queues.items()
                             if queue and other not in self.assigned_work), None)   # its node went down
            if orphaned:
                return orphaned.pop(0)
            ends = {other: max(self.busy_until.get(other, 0.0), clock()) + sum(self.expected[u] for u in queue)
                    for other, queue in self.queues.items() if queue}
            if not ends:
                return None
            owner = max(ends, key=ends.get)
            smallest = self.queues[owner][-1]
            if max(self.busy_until.get(node, 0.0), clock()) + self.expected[smallest] < ends[owner]:
                return self.queues[owner].pop()
            return None

        def _assign_work_unit(self, node) -> None:
            unit = self._next_unit(node)
            if unit is None:
                node.shutdown()   # the rest is planned for nodes that end sooner
                return
            if unit in self.workqueue:
                self.workqueue.move_to_end(unit, last=False)
            self.busy_until[node] = max(self.busy_until.get(node, 0.0), clock()) + self.expected[unit]
            super()._assign_work_unit(node)

    return ExpectedTimeScheduling(config, log)
