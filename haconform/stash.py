"""What a pytest session keeps in config.stash: one key per thing, typed, in one place.

The haconform plugin sets them; fixtures, the verdict report and the restore read them.  A module
of its own so that any of those can import a key without importing the plugin module itself
(pytest must load that first, to rewrite its asserts).
"""

from __future__ import annotations

import pytest

from .guard import HostGuard

# The session's HostGuard (haconform/guard.py): made in pytest_configure, handed to the target.
GUARD = pytest.StashKey[HostGuard]()
# Why the session stopped early (a restore that failed): {"test", "message", "evidence"}.
SESSION_STOPPED = pytest.StashKey[dict]()
# Side by side (haconform/side_by_side.py): what each worker reported back, on the controller.
WORKER_OUTPUTS = pytest.StashKey[list]()
