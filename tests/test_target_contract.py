"""The Target interface and the one CommandFailed: what every target declares, what a failed command is."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from haconform import errors, readers
from haconform.targets import base
from haconform.targets.base import Machine, Target
from haconform.targets.lab import LabTarget
from haconform.targets.inventory_target import InventoryTarget
from haconform.targets.vagrant import LibvirtGuests, VagrantTarget
from haconform.topology import load_topology
from tests.fakes import FakeHost

REPO = Path(__file__).resolve().parent.parent
CONTRACT = {"up", "down", "testinfra_host", "_exec_prefix", "transport_kind", "_power", "_set_nic", "power_state",
            "nic_state", "booted", "start_fence_device", "fence_device_running", "fence_requests", "describe"}
# What the base class does itself, asking the guard first: targets implement the _-methods behind them.
GUARDED = {"program_argv": "_exec_prefix", "power": "_power", "set_nic": "_set_nic"}


def test_target_is_abstract_and_declares_the_whole_contract():
    assert Target.__abstractmethods__ == CONTRACT
    with pytest.raises(TypeError):
        Target(load_topology())


@pytest.mark.parametrize("cls", [LabTarget, InventoryTarget, LibvirtGuests, VagrantTarget])
def test_no_target_overrides_what_the_guard_stands_in_front_of(cls):
    for public in GUARDED:
        assert getattr(cls, public) is getattr(Target, public), f"{cls.__name__}.{public} bypasses the guard"


@pytest.mark.parametrize("cls", [LabTarget, InventoryTarget, LibvirtGuests, VagrantTarget])
def test_every_target_implements_the_contract_with_its_signatures(cls):
    assert not cls.__abstractmethods__
    def shape(function):
        return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]
    for name in CONTRACT:
        assert shape(getattr(cls, name)) == shape(getattr(Target, name)), f"{cls.__name__}.{name}"
    assert cls.kind != Target.kind and cls.can_power
    assert not hasattr(cls, "manages_fence_device")


def test_one_command_failed_and_it_is_not_an_assertion():
    assert base.CommandFailed is readers.CommandFailed is errors.CommandFailed
    assert issubclass(errors.CommandFailed, errors.HaconformError)
    assert not issubclass(errors.CommandFailed, AssertionError)
    assert issubclass(errors.WaitTimeout, AssertionError)   # a wait that runs out is a failed expectation


class _Target:
    def __init__(self, host):
        self.host = host

    def testinfra_host(self, name):
        return self.host


def test_machine_succeed_and_fail_raise_command_failed():
    host = FakeHost()
    host.on("false", rc=1, stderr="nope")
    host.on("true", stdout="yes\n")
    machine = Machine(_Target(host), load_topology().host("server1"))
    assert machine.succeed("true") == "yes\n"
    with pytest.raises(errors.CommandFailed, match="exited 1.*nope") as caught:
        machine.succeed("false")
    assert not isinstance(caught.value, AssertionError)
    with pytest.raises(errors.CommandFailed, match="expected to fail"):
        machine.fail("true")


def test_only_the_lint_finding_is_the_expected_failure_of_hac_lint_002():
    spec = importlib.util.spec_from_file_location("suite_43", REPO / "suites" / "test_43_runbook_lint.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    [xfail] = [m for m in suite.test_verbatim_config_is_valid.pytestmark if m.name == "xfail"]
    raises = xfail.kwargs["raises"]
    assert xfail.kwargs["strict"] is True
    assert issubclass(suite.VerbatimRefused, raises)
    assert not issubclass(errors.CommandFailed, raises) and not issubclass(errors.WaitTimeout, raises)
