"""The embedded namespace lab: lab.py (the lab: up, down, hosts, power, NICs, its state in lab.json),
init.py (a host's PID 1), power.py (the lab's power control for the fence daemon), linux.py (the Linux
calls os lacks), systemctl.sh (systemctl as the runbook's commands expect it, in a host
without systemd)."""
