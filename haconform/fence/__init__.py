"""A fence device for the namespace lab that answers Debian's real fence_xvm.

protocol: fence_xvm's wire format, signatures and challenge-response.
daemon: FenceDaemon (fence_virtd's multicast listener) acting through a PowerControl.
"""

from .daemon import Domain, FenceDaemon, PowerControl, netns_socket_factory
from .protocol import Hash, Op, Result

__all__ = ["Domain", "FenceDaemon", "PowerControl", "netns_socket_factory", "Hash", "Op", "Result"]
