"""The VM target's machinery: the box, libvirt, fence_virtd and the guests.

box: the Debian bookworm Vagrant box, built offline from the machine's apt mirror.
libvirt: libvirtd and helpers started when not running, networks, pool, leftovers.
fence: fence_virtd.conf as `fence_virtd -c` writes it, fence_virtd in the fence host's netns.
env: VmEnvironment, one set of guests (`haconform vm up|down|status|inventory`).
"""

STATE_ROOT = "/var/lib/haconform/vm"
