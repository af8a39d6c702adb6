"""haconform/timeouts.py: Bound keeps its parts through arithmetic; BOUNDS scales only the listed
allowances, by the calibration's factor, never past the ceiling; without a calibration the figures are
exactly Bounds'."""

from __future__ import annotations

import json
import pickle
from dataclasses import fields
from types import SimpleNamespace

import pytest

from haconform import timeouts
from haconform.readers.cluster import read_cib_configuration
from haconform.timeouts import (BASE, BOUNDS, CATEGORIES, CEILING, MARGIN, NOT_SCALED, SCALED, Bound, Bounds,
                                documented, set_calibration)

from tests.fakes import FakeHost


@pytest.fixture(autouse=True)
def no_calibration():
    set_calibration(None)
    yield
    set_calibration(None)


def factors(**given) -> SimpleNamespace:
    return SimpleNamespace(factors={category: given.get(category, 1.0) for category in CATEGORIES})


# ----- Bound --------------------------------------------------------------------------------------

def test_documented_is_the_interval_plus_the_margin_with_its_parts():
    bound = documented(30)
    assert isinstance(bound, Bound) and bound == 45.0
    assert (bound.documented, bound.allowance, bound.base, bound.factor) == (30.0, 15.0, 15.0, 1.0)
    assert bound.name == "documented(30)"
    assert bound.describe() == "bound 45.0 s = documented 30 s + allowance 15 s (15 s × 1.00)"


def test_sum_of_allowances_keeps_the_composition():
    bound = BOUNDS.http_request + BOUNDS.probe_request * 3
    assert bound == 8.0 and bound.name == "http_request+3×probe_request"
    assert (bound.documented, bound.allowance, bound.base) == (0.0, 8.0, 8.0)
    assert bound.describe() == "bound 8.0 s = allowance 8 s (8 s × 1.00)"
    mixed = documented(30) + BOUNDS.service_start
    assert mixed == 65.0 and (mixed.documented, mixed.allowance) == (30.0, 35.0)
    assert (3 * BOUNDS.probe_request).name == "3×probe_request"
    assert (2 * (BOUNDS.http_request + BOUNDS.probe_request)).name == "2×(http_request+probe_request)"


def test_a_plain_number_added_counts_as_unscaled_allowance():
    set_calibration(factors(php=2.0))
    bound = BOUNDS.http_request + 2.5
    assert bound == 12.5 and bound.allowance == 12.5 and bound.base == 7.5 and bound.documented == 0.0
    assert bound.name == "http_request+2.5"
    assert (1 + BOUNDS.http_request).name == "1+http_request"
    assert sum([BOUNDS.http_request, BOUNDS.probe_request]).name == "http_request+probe_request"   # 0 + first


def test_everything_else_is_a_plain_float():
    bound = documented(30)
    for value in (bound - 1, bound / 2, -bound, bound * bound, abs(bound), bound // 2):
        assert type(value) is float, value
    assert f"{bound:.1f}" == "45.0" and repr(bound) == "45.0" and str(bound) == "45.0"
    assert json.dumps({"t": bound}) == '{"t": 45.0}'
    copy = pickle.loads(pickle.dumps(bound))
    assert copy == 45.0 and copy.documented == 30.0 and copy.name == "documented(30)"
    assert max(BOUNDS.command, BOUNDS.cli_query).name == "command"


def test_a_harness_figure_passed_as_an_interval_stays_an_allowance():
    bound = documented(BOUNDS.http_request)
    assert bound == 20.0 and bound.documented == 0.0 and bound.allowance == 20.0


# ----- BOUNDS and the calibration ------------------------------------------------------------------

def test_without_a_calibration_every_figure_is_today_s():
    for f in fields(Bounds):
        value = getattr(BOUNDS, f.name)
        assert isinstance(value, Bound) and value == f.default and value.factor == 1.0, f.name
    assert documented(10) == 10 + MARGIN
    assert timeouts.current_calibration() is None


def test_the_scaled_fields_are_the_listed_ones():
    assert set(SCALED) == {"service_start", "service_stop", "haproxy_reload", "http_request", "log_line", "command",
                           "cli_query", "pcsd_ready", "cluster_form", "cluster_settle", "resource_move",
                           "fence_complete", "node_rejoin", "fence_request", "agent_start", "locust_exit", "dead_man",
                           "vip_watch_gap", "pcs_request", "fence_list"}
    assert set(SCALED.values()) <= set(CATEGORIES)
    assert {"probe_request", "apt_lock", "apt_run", "shell_exit", "vm_boot", "vm_ssh"} <= set(NOT_SCALED)
    assert set(SCALED) | set(NOT_SCALED) == {f.name for f in fields(Bounds)}


def test_only_the_listed_fields_scale_by_their_category():
    given = {"process": 2.0, "python": 1.5, "agent": 2.5, "php": 3.0, "transport": 1.25}
    set_calibration(factors(**given))
    for f in fields(Bounds):
        value = getattr(BOUNDS, f.name)
        expected = f.default * given[SCALED[f.name]] if f.name in SCALED else f.default
        assert value == pytest.approx(expected), f.name
        assert value.base == f.default and value.documented == 0.0
    assert BOUNDS.probe_request == 1.0 and BOUNDS.dead_man == 2000.0 and BOUNDS.vm_boot == 240.0
    assert BOUNDS.http_request == 15.0 and BOUNDS.http_request.factor == 3.0
    assert BASE.http_request == 5.0   # the figures themselves never change
    margin = documented(30)
    assert margin == 60.0 and margin.documented == 30.0 and margin.allowance == 30.0
    assert margin.describe() == "bound 60.0 s = documented 30 s + allowance 30 s (15 s × 2.00)"


def test_a_factor_outside_floor_and_ceiling_is_refused():
    with pytest.raises(ValueError, match="within"):
        set_calibration(factors(agent=CEILING + 0.5))
    with pytest.raises(ValueError, match="within"):
        set_calibration(factors(php=0.5))
    with pytest.raises(ValueError, match="known category"):
        set_calibration(SimpleNamespace(factors={"gpu": 2.0}))
    assert timeouts.current_calibration() is None and BOUNDS.resource_move == 60.0


def test_bounds_cannot_be_changed_at_the_call_site():
    with pytest.raises(AttributeError):
        BOUNDS.command = 1.0
    with pytest.raises(AttributeError):
        BOUNDS.no_such_bound


def test_a_default_bound_is_read_at_call_time():
    host = FakeHost()
    host.on("timeout 30 cibadmin --query --scope configuration", stdout="<configuration/>")
    host.on("timeout 60 cibadmin --query --scope configuration", stdout="<configuration/>")
    read_cib_configuration(host)
    set_calibration(factors(process=2.0))
    read_cib_configuration(host)
    assert [c.split()[1] for c in host.commands] == ["30", "60"]


def test_the_dead_man_backstop_covers_its_waits_whatever_the_factors():
    from haconform import deadman
    from haconform.readers.haproxy import HaproxyRuntime
    assert deadman.dead_man_s() == 800
    set_calibration(factors(process=4.0))        # agent_start grows, the cluster waits do not
    waits = BOUNDS.fence_complete + 2 * BOUNDS.resource_move + 3 * BOUNDS.node_rejoin + BOUNDS.agent_start
    assert waits == 860.0 and deadman.dead_man_s() == 860
    set_calibration(factors(agent=4.0, process=4.0))
    assert deadman.dead_man_s() == 3200
    # a reader made before the calibration still reads its bound when it sends
    runtime = HaproxyRuntime(object())
    set_calibration(factors(process=2.0))
    assert runtime.timeout == 60.0 and HaproxyRuntime(object(), timeout=3).timeout == 3
