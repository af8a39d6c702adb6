"""The perf session's own checks, made before any target is brought up or reached."""

from __future__ import annotations

import pytest

from haconform.perf.run import read_only_refusal


def pytest_configure(config):
    # The suites' rule for --target ssh (haconform/pytest_plugin.py): nothing changes the
    # deployment's hosts without --allow-destructive.  Refused here, the run starts nothing.
    try:
        refused = read_only_refusal(target_kind=config.getoption("--target"),
                                    destructive_allowed=config.getoption("--allow-destructive"),
                                    fault=config.getoption("--perf-fault"),
                                    placement=config.getoption("--perf-placement"))
    except ValueError as bad_option:      # a --perf-placement that is no placement
        raise pytest.UsageError(str(bad_option)) from None
    if refused:
        raise pytest.UsageError(refused)
