"""The safety job's plan (tests/scheduling.py): units by expected time, longest first, no worker idle while
another holds two long units."""

from __future__ import annotations

import heapq
import json
from types import SimpleNamespace

import pytest

from tests.scheduling import make_scheduler, plan_units, read_plan

pytest.importorskip("xdist")


def test_units_go_longest_first_to_the_least_loaded_worker():
    units = {"leak": 300, "equivalence": 280, "dead-man": 135, "hand-made": 110, "describe": 105,
             "read-only": 85, "restore": 75, "stage5": 75, "stage4": 70, "lab": 35}
    queues = plan_units(units, 4)
    assert queues[0][0] == "leak" and queues[1][0] == "equivalence"
    assert queues[0] == ["leak"], queues   # nothing joins the longest unit while the others have less
    loads = [sum(units[u] for u in queue) for queue in queues]
    assert max(loads) <= 4 / 3 * max(max(units.values()), sum(units.values()) / 4), queues   # LPT's bound
    assert sorted(u for queue in queues for u in queue) == sorted(units)


def test_a_plan_that_cannot_be_read_is_no_plan(tmp_path):
    (tmp_path / "plan.json").write_text("{not json")
    assert read_plan(tmp_path / "plan.json") == {} and read_plan(tmp_path / "missing.json") == {}


class FakeNode:
    def __init__(self, name: str):
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True

    def __repr__(self):
        return self.gateway.id


def simulate(collection: list[str], plan: dict[str, tuple[str, float]], workers: int, tmp_path) -> float:
    """Run the scheduler against fake workers that take each test's expected time (a worker runs its next
    test once it knows the one after it, or has been told to stop, as xdist's workers do)."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    config = SimpleNamespace(getvalue=lambda name: [f"{workers}*popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=True))
    now = [0.0]
    scheduler = make_scheduler(config, None, path, clock=lambda: now[0])
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    for node in nodes:
        scheduler.add_node(node)
    for node in nodes:
        scheduler.add_node_collection(node, collection)
    scheduler.schedule()
    seconds = {nodeid: plan[nodeid][1] for nodeid in collection}
    clock, running, done = 0.0, [], {node: 0 for node in nodes}

    def start(node, now):
        if done[node] < len(node.sent) and (done[node] + 1 < len(node.sent) or node.shutting_down):
            nodeid = collection[node.sent[done[node]]]
            heapq.heappush(running, (now + seconds[nodeid], node.gateway.id, node))

    for node in nodes:
        start(node, 0.0)
    while running:
        clock, _, node = heapq.heappop(running)
        now[0] = clock
        done[node] += 1
        scheduler.mark_test_complete(node, node.sent[done[node] - 1])
        for other in nodes:
            if not any(entry[2] is other for entry in running):
                start(other, clock)
    assert sum(done.values()) == len(collection), "every test ran once"
    return clock


def test_a_long_unit_is_not_queued_behind_another_on_one_worker(tmp_path):
    plan = {"t/leak.py::a": ("t/leak.py", 300), "t/leak.py::b": ("t/leak.py", 300),
            "t/eq.py::main": ("t/eq.py::main", 280), "t/eq.py::apply": ("t/eq.py::apply", 55),
            "t/dm.py::x": ("t/dm.py", 135), "t/hm.py::x": ("t/hm.py", 110), "t/ds.py::x": ("t/ds.py", 105),
            "t/ro.py::x": ("t/ro.py", 85), "t/rs.py::x": ("t/rs.py", 75), "t/lab.py::x": ("t/lab.py", 35)}
    # The leak file's expected time is its whole: its first test holds the module fixture's run.
    plan["t/leak.py::b"] = ("t/leak.py", 1)
    plan["t/leak.py::a"] = ("t/leak.py", 299)
    collection = list(plan)
    total = sum(seconds for _, seconds in plan.values())
    wall = simulate(collection, plan, 4, tmp_path)
    assert wall <= max(300, total / 4) * 1.15, f"{wall:.0f} s for {total:.0f} s of work on 4 workers"


def test_without_a_plan_every_file_is_a_unit(tmp_path):
    collection = ["t/a.py::x", "t/a.py::y", "t/b.py::x"]
    plan = {nodeid: (nodeid.split("::")[0], 1.0) for nodeid in collection}
    assert simulate(collection, plan, 2, tmp_path) == pytest.approx(2.0)
