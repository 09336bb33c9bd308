"""The address others reach this worker's HTTP server at, for service discovery.

A worker bound to every interface (the default ``0.0.0.0``) must not advertise that: it
advertises the address of the interface its outbound traffic leaves by, found without
sending anything (a UDP ``connect`` only picks a route). Where that address is not the one
others reach (NAT, containers), the ``advertise_address`` setting replaces it.
"""

from __future__ import annotations

import functools
import socket

_EVERY_INTERFACE = {"", "0.0.0.0", "::"}


@functools.lru_cache(maxsize=4)
def advertised_address(bound: str) -> str:
    """``bound``, or this host's primary IP when ``bound`` means every interface."""
    if bound not in _EVERY_INTERFACE:
        return bound
    family, probe = (socket.AF_INET6, "2001:db8::1") if bound == "::" else (
        socket.AF_INET, "192.0.2.1")  # documentation ranges: never routed anywhere real
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            address: str = udp.getsockname()[0]
            return address
    except OSError:  # no route at all: the host's name is the best there is
        return socket.gethostname()
