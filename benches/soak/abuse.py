"""Abusive clients for the soak test, mixed in with the legitimate load.

Usage: python3 abuse.py HOST PORT SECONDS

Runs, until SECONDS have passed, at the same time:
  slow       SLOW connections sending a request's header one byte per second (slowloris);
  idle       IDLE connections that connect and send nothing;
  oversized  a loop posting a body four times the body limit, announced in Content-Length and
             written whole before reading the answer;
  garbage    a loop posting malformed JSON, unknown features and too many entity rows.
Each reconnects when the server closes it. Prints one JSON line at the end: what each kind saw
(answers by status, connections the server closed). Standard library only.
"""

import asyncio
import json
import sys
import time
from collections import Counter

SLOW, IDLE = 64, 64
BODY_LIMIT = 1 << 20
seen: dict[str, Counter] = {k: Counter() for k in ("slow", "idle", "oversized", "garbage")}


async def status_of(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    if not line:
        return "closed"
    parts = line.split(b" ")
    return parts[1].decode() if len(parts) > 1 else "garbled"


async def slow(host: str, port: int, until: float) -> None:
    head = b"POST /get-online-features HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            for b in head:
                if time.monotonic() >= until:
                    break
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(1.0)
            else:
                seen["slow"]["sent whole header"] += 1
            writer.close()
        except (ConnectionError, OSError):
            seen["slow"]["closed by server"] += 1
            await asyncio.sleep(0.2)


async def idle(host: str, port: int, until: float) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            left = until - time.monotonic()
            data = await asyncio.wait_for(reader.read(1), timeout=max(left, 0.1))
            seen["idle"]["closed by server" if not data else "answered"] += 1
            writer.close()
        except asyncio.TimeoutError:
            seen["idle"]["still open at end"] += 1
        except (ConnectionError, OSError):
            seen["idle"]["closed by server"] += 1
            await asyncio.sleep(0.2)


async def post(host: str, port: int, body: bytes, kind: str) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /get-online-features HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        for i in range(0, len(body), 1 << 16):
            writer.write(body[i : i + (1 << 16)])
            await writer.drain()
        seen[kind][await status_of(reader)] += 1
        writer.close()
    except (ConnectionError, OSError):
        seen[kind]["connection reset"] += 1


async def oversized(host: str, port: int, until: float) -> None:
    body = b'{"features":["bench:f0"],"entities":{"driver_id":[' + b"1," * (2 * BODY_LIMIT) + b"1]}}"
    while time.monotonic() < until:
        await post(host, port, body, "oversized")
        await asyncio.sleep(0.5)


async def garbage(host: str, port: int, until: float) -> None:
    bodies = [
        b'{"features":["bench:f0"],"entities":{"driver_id":[1,2,',
        b'{"features":["bench:nope"],"entities":{"driver_id":[1]}}',
        b'{"features":["bench:f0"],"entities":{"driver_id":["x"]}}',
        json.dumps({"features": ["bench:f0"], "entities": {"driver_id": list(range(20_000))}}).encode(),
        json.dumps({"features": ["bench:f0"], "entities": {f"k{i}": [1] for i in range(50_000)}}).encode(),
    ]
    i = 0
    while time.monotonic() < until:
        await post(host, port, bodies[i % len(bodies)], "garbage")
        i += 1
        await asyncio.sleep(0.2)


async def main() -> None:
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    until = time.monotonic() + seconds
    tasks = [slow(host, port, until) for _ in range(SLOW)]
    tasks += [idle(host, port, until) for _ in range(IDLE)]
    tasks += [oversized(host, port, until), garbage(host, port, until)]
    await asyncio.gather(*tasks)
    print(json.dumps({k: dict(v) for k, v in seen.items()}))


if __name__ == "__main__":
    asyncio.run(main())
