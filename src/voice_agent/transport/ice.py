"""Which local addresses ICE offers, and which address the client is told to use.

aioice lists every interface but loopback, with no per-connection option, so the choice is made
for the process: ``restrict_host_addresses(["127.0.0.1"])`` keeps all WebRTC media on loopback
(tests, benchmarks, a server that must not be reachable from the network).

``advertise_host_candidates`` puts ``webrtc.advertised_address`` in the answer's host
candidates instead of the local addresses: a worker in a container or behind a NAT only knows
its private address (172.18.0.3), which a browser outside cannot reach; the public one that
forwards to it is configured (as mediasoup's ``announcedIp`` or LiveKit's ``node_ip``). The
ports are kept, so the forwarding must keep them too (docs/deploy.md: aioice binds each
candidate to a random port, hence a fixed ephemeral port range or host networking). Only the
text sent to the client changes: aioice still listens on its local sockets, and the client's
checks that arrive there through the NAT are answered as usual.
"""

from __future__ import annotations

import contextlib
import ipaddress
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


def advertise_host_candidates(sdp: str, address: str | None) -> str:
    """``sdp`` with ``address`` in place of the local address of each host candidate of the
    same IP family (port, foundation and priority kept), and in the ``c=`` lines that named one
    of those addresses. Candidates of the other family and server-reflexive or relay ones are
    left as they are. ``None`` or an empty string: ``sdp`` unchanged.

    Raises ValueError when ``address`` is not an IP address: browsers do not resolve names in
    candidates (only mDNS ``.local`` ones).
    """
    if not address:
        return sdp
    try:
        advertised = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        raise ValueError(f"webrtc.advertised_address must be an IP address, not {address!r}: "
                         "ICE candidates carry addresses, which browsers do not resolve") from None
    public = str(advertised)
    family = "IP6" if advertised.version == 6 else "IP4"
    replaced: set[str] = set()
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    out: list[str] = []
    for line in lines:
        if line.startswith("a=candidate:"):
            line = _advertise_candidate(line, advertised.version, public, replaced)
        out.append(line)
    for i, line in enumerate(out):
        parts = line.split(" ")
        if line.startswith("c=IN ") and len(parts) == 3 and parts[2] in replaced:
            out[i] = f"c=IN {family} {public}"
    return ("\r\n" if "\r\n" in sdp else "\n").join(out)


def _advertise_candidate(line: str, version: int, public: str, replaced: set[str]) -> str:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    parts = line.split(" ")
    if len(parts) < 8 or parts[6] != "typ" or parts[7] != "host":
        return line
    try:
        local = ipaddress.ip_address(parts[4])
    except ValueError:
        return line  # an mDNS name: not ours to change
    if local.version != version:
        return line
    replaced.add(parts[4])
    parts[4] = public
    return " ".join(parts)
