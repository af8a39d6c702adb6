"""Faults, split as Jepsen splits a test:

    nemesis.py     the faults: inject one, heal it (Standby, ServiceStop, PropertyChange, VipDeleted,
                   NicDown, Reset, Crash; make_fault for perf)
    checker.py     the checks: audit(), the log lines an audit excuses, the VIP watch
    experiment.py  FaultRun: observe, inject, stop observing, keep the evidence

Suites and perf import from here; the pieces' own names (the VIP watch, the
log paths, the excused lines as data) from the piece.
"""

from .checker import ExcusedLogLine, audit
from .experiment import FaultRun
from .nemesis import Crash, Fault, NicDown, PropertyChange, Reset, ServiceStop, Standby, VipDeleted, make_fault

__all__ = ["Crash", "ExcusedLogLine", "Fault", "FaultRun", "NicDown", "PropertyChange", "Reset", "ServiceStop",
           "Standby", "VipDeleted", "audit", "make_fault"]
