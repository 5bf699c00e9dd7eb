"""Which local addresses ICE offers.

aioice lists every interface but loopback, with no per-connection option, so the choice is made
for the process: ``restrict_host_addresses(["127.0.0.1"])`` keeps all WebRTC media on loopback
(tests, benchmarks, a server that must not be reachable from the network).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aioice.ice


@contextlib.contextmanager
def restrict_host_addresses(addresses: list[str]) -> Iterator[None]:
    if not addresses:
        yield
        return
    original = aioice.ice.get_host_addresses
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses  # type: ignore[assignment]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original  # type: ignore[assignment]
