#!/usr/bin/env python3
"""The Python peer of examples/http_server for the HTTP load test (stdlib only).

An asyncio HTTP/1.1 server (keep-alive) whose compute endpoint runs in a
concurrent.futures.ProcessPoolExecutor and whose cheap endpoint is answered on
the event loop: the same endpoints and the same computation as the C++ server.

    http_peer.py [--address 127.0.0.1] [--port 0] [--workers N]

The first line on stdout is "listening on http://ADDRESS:PORT". SIGTERM or
SIGINT stops it.
"""
import argparse
import asyncio
import concurrent.futures
import os
import signal
import sys
from urllib.parse import parse_qs, urlsplit


def count_primes(lo, hi):
    """Same trial division as count_primes in examples/http_server.cpp."""
    count = 0
    for n in range(max(lo, 2), hi):
        prime = n == 2 or n == 3 or (n % 2 != 0 and n % 3 != 0)
        d = 5
        while prime and d * d <= n:
            prime = n % d != 0 and n % (d + 2) != 0
            d += 6
        count += 1 if prime else 0
    return count


def response(status, body, close=False):
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
    data = body.encode()
    return (f"HTTP/1.1 {status} {reasons.get(status, 'Unknown')}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode() + data


async def handle(pool, target):
    url = urlsplit(target)
    if url.path == "/ping":
        return 200, "pong\n"
    if url.path == "/primes":
        try:
            below = int(parse_qs(url.query)["below"][0])
        except (KeyError, ValueError):
            return 400, "want /primes?below=N\n"
        loop = asyncio.get_running_loop()
        try:
            n = await loop.run_in_executor(pool, count_primes, 0, below)
        except Exception as e:  # a broken pool, a crashed worker
            return 500, f"computation failed: {e!r}\n"
        return 200, f"{n}\n"
    return 404, "no such path\n"


async def serve(pool, reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                writer.write(response(400, "bad request\n", close=True))
                break
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            close = headers.get("connection", "").lower() == "close" or parts[2] == "HTTP/1.0"
            status, body = await handle(pool, parts[1])
            writer.write(response(status, body, close))
            await writer.drain()
            if close:
                break
    except asyncio.CancelledError:
        pass  # shutdown: the connection goes away with the server
    finally:
        writer.close()


def idle_priority():
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()
    # Workers under SCHED_IDLE, as the C++ server's: the loop gets a CPU first.
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=args.workers,
                                                  initializer=idle_priority)
    # Start the workers now, as the C++ pool does in its constructor.
    list(pool.map(count_primes, [0] * args.workers, [10] * args.workers))
    server = await asyncio.start_server(lambda r, w: serve(pool, r, w), args.address, args.port,
                                        backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://{args.address}:{port} ({args.workers} workers)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    pool.shutdown(wait=True, cancel_futures=True)
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
