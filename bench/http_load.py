#!/usr/bin/env python3
"""HTTP load test: examples/http_server (coproc) against bench/peers/http_peer.py
(asyncio + ProcessPoolExecutor), driven by wrk on loopback (127.0.0.1 only).

A contender of bench/run.py's "http" group::

    http_load.py http [--quick] --server coproc|python [--build DIR]

For the chosen server it measures, with wrk (bounded in time):

1. the compute endpoint (/primes?below=N, counted in a worker) saturated by
   --connections connections: requests/s and p99 latency;
2. the cheap endpoint (/ping) from one connection with no other load, as the
   machine's baseline (the CPUs may be shared with other work);
3. the cheap endpoint (/ping, answered on the event loop) from one connection
   while a second wrk keeps the compute endpoint saturated (every worker busy):
   p99 latency and requests/s. This is how responsive the loop stays.

It prints run.py's JSON lines (metric, contender, value, unit, better).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def emit(metric, contender, value, unit, better, **extra):
    print(json.dumps({"metric": metric, "contender": contender, "value": value, "unit": unit,
                      "better": better, **extra}), flush=True)


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse_wrk(out):
    """requests/s, {percentile: ms}, request count, errors (non-2xx + socket errors)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): to_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(x) for x in m.groups()) if m else 0
    return rps, pct, n, errors


def wrk(url, connections, seconds):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_server(kind, build, workers):
    if kind == "coproc":
        exe = os.path.join(build, "examples", "http_server")
        argv = [exe, "--port", "0", "--workers", str(workers)]
    else:
        argv = [sys.executable, os.path.join(ROOT, "bench", "peers", "http_peer.py"), "--port", "0",
                "--workers", str(workers)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"http_load: {argv[0]} did not announce a port: {line!r}")
    return proc, int(m.group(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("group", nargs="?", default="http")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--server", choices=["coproc", "python"], required=True)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--below", type=int, default=30000, help="compute: primes below N")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--seconds", type=int, default=None)
    args = p.parse_args()
    if args.group != "http":
        return  # run.py's protocol: a program prints nothing for groups it does not know
    seconds = args.seconds or (2 if args.quick else 6)
    workers = len(os.sched_getaffinity(0))
    label = ("coproc http_server (Asio + process_pool)" if args.server == "coproc"
             else "asyncio + ProcessPoolExecutor")
    proc, port = start_server(args.server, args.build, workers)
    base = f"http://127.0.0.1:{port}"
    compute = f"{base}/primes?below={args.below}"
    try:
        subprocess.run(["wrk", "-t1", "-c2", "-d1s", compute], capture_output=True, check=True)

        # The cheap endpoint alone: what the machine gives with no compute load.
        _, pct_idle, n_idle, _ = parse_wrk(wrk(f"{base}/ping", 1, max(1, seconds // 2)).communicate()[0])
        emit("http_cheap_p99_idle", label, pct_idle[99], "ms", "lower", p50=pct_idle[50],
             requests=n_idle)

        rps, pct, n, errors = parse_wrk(wrk(compute, args.connections, seconds).communicate()[0])
        emit("http_compute_rps", label, rps, "req/s", "higher", requests=n, errors=errors,
             below=args.below, connections=args.connections, workers=workers)
        emit("http_compute_p99", label, pct[99], "ms", "lower", p50=pct[50], requests=n)

        # The cheap endpoint while the compute endpoint keeps every worker busy:
        # the compute wrk starts first and runs one second longer on each side.
        load = wrk(compute, args.connections, seconds + 2)
        time.sleep(1)  # let the compute load reach saturation before measuring
        rps_ping, pct_ping, n_ping, err_ping = parse_wrk(
            wrk(f"{base}/ping", 1, seconds).communicate()[0])
        load_rps, _, _, _ = parse_wrk(load.communicate()[0])
        emit("http_cheap_p99_saturated", label, pct_ping[99], "ms", "lower", p50=pct_ping[50],
             requests=n_ping, errors=err_ping, compute_rps_meanwhile=load_rps)
        emit("http_cheap_rps_saturated", label, rps_ping, "req/s", "higher")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
