"""Targets: where the topology runs.  Suites never know which one they got.

A target gives, for each host of the topology, a testinfra Host (read-only
modules and run/check_output), an argv prefix to start long-running programs
in it (the client agent, the prober), and power/NIC control for fault tests.
"""
