"""The harness's own tests: the longest lab files first.

xdist hands files to its workers in collection order (the safety job's --dist loadfile): a file of five
minutes collected last starts when the others are done and makes the whole job five minutes longer than
its work.  A lab file says what it takes in `pytest.mark.lab(expected_s=...)` (measured in CI); the files
that say more come first, each file's tests staying together and in their order."""
from __future__ import annotations


def expected_seconds(item) -> float:
    marker = item.get_closest_marker("lab")
    return float(marker.kwargs.get("expected_s", 0)) if marker else 0.0


def pytest_collection_modifyitems(items):
    longest: dict[str, float] = {}
    for item in items:
        path = str(item.path)
        longest[path] = max(longest.get(path, 0.0), expected_seconds(item))
    items.sort(key=lambda item: -longest[str(item.path)])   # stable: files stay whole and in order
