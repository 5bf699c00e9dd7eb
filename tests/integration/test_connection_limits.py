"""Half-sent requests are closed after server.header_timeout_s; a client IP holds at most
server.max_connections_per_client connections (#13). A real server on loopback with fake
providers: only the HTTP layer matters here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.helpers.fakes import fake_services
from tests.integration.conftest import RunningServer, connect, make_config, start_server

HEADER_TIMEOUT_S = 0.5
CAP = 5
HALF_REQUEST = b"GET /v3/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the headers never end
REQUEST = b"GET /v3/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[dict[str, RunningServer]]:
    services = fake_services()
    started = {
        "timed": await start_server(make_config(server={"header_timeout_s": HEADER_TIMEOUT_S}),
                                    services),
        "capped": await start_server(make_config(server={"max_connections_per_client": CAP}),
                                     services),
        "capped_too": await start_server(make_config(server={"max_connections_per_client": CAP}),
                                         services),
    }
    yield started
    for running in started.values():
        await running.stop()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def open_conn(srv: RunningServer) -> Conn:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()
    for _, writer in conns:
        try:
            await writer.wait_closed()
        except OSError:  # reset by the server: closed all the same
            pass


async def get_health(conn: Conn) -> bytes:
    """One complete request on ``conn``; the response's status line."""
    reader, writer = conn
    writer.write(REQUEST)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await asyncio.wait_for(reader.readexactly(length), 5)
    return status


async def read_until_closed(conn: Conn, timeout: float) -> bytes:
    """Everything the server sends until it closes ``conn``; fails if it is still open then."""
    reader, _ = conn
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {timeout} s")


@pytest.mark.parametrize("sent", [HALF_REQUEST, b""], ids=["half_request", "nothing"])
async def test_incomplete_headers_are_closed_after_the_header_timeout(
        servers: dict[str, RunningServer], sent: bytes) -> None:
    conn = await open_conn(servers["timed"])
    conn[1].write(sent)
    t0 = time.monotonic()
    answer = await read_until_closed(conn, HEADER_TIMEOUT_S + 2)
    assert time.monotonic() - t0 >= HEADER_TIMEOUT_S * 0.8
    assert answer.startswith(b"HTTP/1.1 408 ")
    await close_all([conn])


async def test_a_keep_alive_connection_that_half_sends_its_next_request_is_closed(
        servers: dict[str, RunningServer]) -> None:
    conn = await open_conn(servers["timed"])
    assert await get_health(conn) == b"HTTP/1.1 200 OK\r\n"
    # The first byte of the next request stops uvicorn's keep-alive timer (5 s); ours bounds it.
    conn[1].write(HALF_REQUEST)
    assert (await read_until_closed(conn, HEADER_TIMEOUT_S + 2)).startswith(b"HTTP/1.1 408 ")
    await close_all([conn])


async def test_complete_requests_and_websockets_outlive_the_header_timeout(
        servers: dict[str, RunningServer]) -> None:
    srv = servers["timed"]
    half = await open_conn(srv)
    half[1].write(HALF_REQUEST)
    keep_alive = await open_conn(srv)
    async with connect(f"{srv.ws}/ws/v3") as ws:
        await ws.wait_type("connection_established")
        assert await get_health(keep_alive) == b"HTTP/1.1 200 OK\r\n"
        t0 = time.monotonic()
        await read_until_closed(half, HEADER_TIMEOUT_S + 2)  # the timer runs...
        await asyncio.sleep(max(0.0, t0 + HEADER_TIMEOUT_S + 1.0 - time.monotonic()))
        # ...but not on an upgraded WebSocket, nor on a keep-alive connection between requests.
        await ws.send({"type": "ping", "timestamp": 7})
        await ws.wait_type("pong", 5, timestamp=7)
        assert ws.close_code is None
        assert await get_health(keep_alive) == b"HTTP/1.1 200 OK\r\n"
    await close_all([half, keep_alive])


async def test_connections_over_the_per_client_cap_are_closed_and_the_slots_come_back(
        servers: dict[str, RunningServer]) -> None:
    srv = servers["capped"]
    conns = [await open_conn(srv) for _ in range(4 * CAP)]
    closed: Callable[[], list[Conn]] = lambda: [c for c in conns if c[0].at_eof()]
    await until(lambda: len(closed()) >= 3 * CAP, 5, "the connections over the cap stay open")
    kept = [c for c in conns if not c[0].at_eof()]
    assert len(kept) == CAP
    for conn in kept:  # the ones kept are served
        assert await get_health(conn) == b"HTTP/1.1 200 OK\r\n"
    # Another server in the same process counts its own connections.
    other = [await open_conn(servers["capped_too"]) for _ in range(CAP)]
    for conn in other:
        assert await get_health(conn) == b"HTTP/1.1 200 OK\r\n"
    await close_all(conns + other)

    # Once closed, their slots come back (connection_lost may come a moment after our close).
    async def all_served() -> bool:
        fresh = [await open_conn(srv) for _ in range(CAP)]
        try:
            return all([await get_health(c) == b"HTTP/1.1 200 OK\r\n" for c in fresh])
        except (OSError, asyncio.IncompleteReadError):
            return False
        finally:
            await close_all(fresh)

    await until_async(all_served, 5, "the slots of closed connections are not given back")
    # A WebSocket takes a slot too, and gives it back when it closes.
    async with connect(f"{srv.ws}/ws/v3") as ws:
        await ws.wait_type("connection_established")
        held = [await open_conn(srv) for _ in range(CAP)]
        await until(lambda: sum(c[0].at_eof() for c in held) == 1, 5, "no slot for the ws")
        await close_all(held)
    await until_async(all_served, 5, "the WebSocket's slot is not given back")


async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float,
                      what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)
