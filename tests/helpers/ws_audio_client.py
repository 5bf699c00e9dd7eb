"""A minimal ``/ws/v3/audio`` client run as its own process, so that a test can SIGKILL it
mid-reply (the kernel then drops its connection; no close frame is ever sent).

    python tests/helpers/ws_audio_client.py ws://127.0.0.1:PORT/ws/v3/audio "a typed question"

It prints one JSON line per event to stdout, flushed at once:
``{"session_id": ...}`` when the session is established, ``{"audio_s": x}`` after every 0.5 s of
the agent's voice received, and every JSON message from the server as ``{"message": {...}}``.
It reads (and discards) the paced audio as it comes, like a player would, and sends 20 ms of
silence every 20 ms as a live microphone does. Only the standard library and ``websockets``.
"""

from __future__ import annotations

import asyncio
import json
import sys


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(url: str, text: str) -> None:
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        hello = json.loads(await ws.recv())
        emit({"session_id": hello.get("session_id")})
        rate = int(hello.get("audio", {}).get("sample_rate", 16000))
        silence = bytes(2 * rate // 50)

        async def microphone() -> None:
            while True:
                await ws.send(silence)
                await asyncio.sleep(0.02)

        mic = asyncio.create_task(microphone())
        await ws.send(json.dumps({"type": "text", "text": text}))
        received = 0
        reported = 0.0
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    received += len(raw) // 2
                    if received / rate >= reported + 0.5:
                        reported = received / rate
                        emit({"audio_s": round(reported, 2)})
                else:
                    emit({"message": json.loads(raw)})
        finally:
            mic.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
