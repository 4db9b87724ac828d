"""Peer: concurrent.futures.ProcessPoolExecutor (see peer_common.py)."""
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, wait

import peer_common as pc

NAME = "ProcessPoolExecutor"


def warm(ex, workers):
    # Tasks that outlast a spawn make the executor start every worker.
    list(ex.map(pc.sleep_then_pid, [0.05] * (2 * workers)))


def group_rtt(args):
    n = 300 if args.quick else 5000
    with ProcessPoolExecutor(pc.nproc()) as ex:
        warm(ex, pc.nproc())
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            ex.submit(pc.noop, 1).result()
            samples.append((time.perf_counter() - t0) * 1e6)
    pc.emit_latency("rtt", NAME + ".submit", samples)


def group_tput(args):
    few = 2000 if args.quick else 20000
    many = 100_000 if args.quick else 1_000_000
    w = pc.nproc()
    with ProcessPoolExecutor(w) as ex:
        warm(ex, w)
        t0 = time.perf_counter()
        futures = [ex.submit(pc.noop, i) for i in range(few)]
        wait(futures)
        pc.emit("noop_tput_submit", NAME + ".submit (all in flight)",
                few / (time.perf_counter() - t0), "tasks/s", "higher", tasks=few)
        t0 = time.perf_counter()
        for _ in ex.map(pc.noop, range(few), chunksize=1):
            pass
        pc.emit("noop_tput_map", NAME + ".map(chunksize=1)",
                few / (time.perf_counter() - t0), "tasks/s", "higher", tasks=few)
        chunk = max(1, many // (4 * w))
        t0 = time.perf_counter()
        for _ in ex.map(pc.noop, range(many), chunksize=chunk):
            pass
        pc.emit("noop_tput_map", f"{NAME}.map(chunksize=n/4w)",
                many / (time.perf_counter() - t0), "tasks/s", "higher", tasks=many,
                chunksize=chunk)


def group_payload(args):
    with ProcessPoolExecutor(pc.nproc()) as ex:
        warm(ex, pc.nproc())
        for label, size in pc.PAYLOAD_SIZES:
            data = bytes(size)
            samples = []
            for _ in range(pc.payload_iterations(size, args.quick)):
                t0 = time.perf_counter()
                ex.submit(pc.echo, data).result()
                samples.append((time.perf_counter() - t0) * 1e6)
            samples.sort()
            pc.emit("payload_rtt_" + label, NAME + ".submit(bytes)",
                    pc.percentile(samples, 0.5), "us", "lower")


def group_speedup(args):
    tasks, n, reps = pc.speedup_setup(args.quick)

    def serial():
        for _ in range(tasks):
            pc.burn(n)

    for w in range(1, pc.nproc() + 1):
        with ProcessPoolExecutor(w) as ex:
            warm(ex, w)
            ratio, extra = pc.paired_speedup(
                serial, lambda: list(ex.map(pc.burn, [n] * tasks, chunksize=1)), reps)
        pc.emit(f"speedup_w{w}", NAME + ".map", ratio, "x", "higher", tasks=tasks, **extra)


def group_ready(args):
    method = args.start_method or "fork"
    ctx = multiprocessing.get_context(method)
    t0 = time.perf_counter()
    ex = ProcessPoolExecutor(pc.nproc(), mp_context=ctx)
    ex.submit(pc.noop, 1).result()
    ms = (time.perf_counter() - t0) * 1e3
    ex.shutdown()
    pc.emit("ready_ms", f"{NAME} ({method})", ms, "ms", "lower")


def group_memory(args):
    w = pc.nproc()
    with ProcessPoolExecutor(w) as ex:
        warm(ex, w)
        time.sleep(0.2)  # let every worker go idle again
        pc.emit_memory(NAME + " worker (fork)", list(ex._processes))


if __name__ == "__main__":
    pc.main({"rtt": group_rtt, "tput": group_tput, "payload": group_payload,
             "speedup": group_speedup, "ready": group_ready, "memory": group_memory})
