"""Peer: multiprocessing.Pool (apply_async, map, imap_unordered)."""
import multiprocessing
import time

import peer_common as pc

NAME = "Pool"


def make_pool(w, method=None):
    ctx = multiprocessing.get_context(method)
    return ctx.Pool(w)


def group_rtt(args):
    n = 300 if args.quick else 5000
    with make_pool(pc.nproc()) as pool:
        pool.map(pc.noop, range(100))
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            pool.apply_async(pc.noop, (1,)).get()
            samples.append((time.perf_counter() - t0) * 1e6)
    pc.emit_latency("rtt", NAME + ".apply_async", samples)


def group_tput(args):
    few = 2000 if args.quick else 20000
    many = 100_000 if args.quick else 1_000_000
    w = pc.nproc()
    with make_pool(w) as pool:
        pool.map(pc.noop, range(100))
        t0 = time.perf_counter()
        results = [pool.apply_async(pc.noop, (i,)) for i in range(few)]
        for r in results:
            r.get()
        pc.emit("noop_tput_submit", NAME + ".apply_async (all in flight)",
                few / (time.perf_counter() - t0), "tasks/s", "higher", tasks=few)
        t0 = time.perf_counter()
        pool.map(pc.noop, range(few), chunksize=1)
        pc.emit("noop_tput_map", NAME + ".map(chunksize=1)",
                few / (time.perf_counter() - t0), "tasks/s", "higher", tasks=few)
        t0 = time.perf_counter()
        pool.map(pc.noop, range(many))
        pc.emit("noop_tput_map", NAME + ".map (default chunks)",
                many / (time.perf_counter() - t0), "tasks/s", "higher", tasks=many)
        t0 = time.perf_counter()
        for _ in pool.imap_unordered(pc.noop, range(few)):
            pass
        pc.emit("noop_tput_map", NAME + ".imap_unordered(chunksize=1)",
                few / (time.perf_counter() - t0), "tasks/s", "higher", tasks=few)
        chunk = max(1, many // (4 * w))
        t0 = time.perf_counter()
        for _ in pool.imap_unordered(pc.noop, range(many), chunksize=chunk):
            pass
        pc.emit("noop_tput_map", NAME + ".imap_unordered(chunksize=n/4w)",
                many / (time.perf_counter() - t0), "tasks/s", "higher", tasks=many)


def group_payload(args):
    with make_pool(pc.nproc()) as pool:
        pool.map(pc.noop, range(100))
        for label, size in pc.PAYLOAD_SIZES:
            data = bytes(size)
            samples = []
            for _ in range(pc.payload_iterations(size, args.quick)):
                t0 = time.perf_counter()
                pool.apply_async(pc.echo, (data,)).get()
                samples.append((time.perf_counter() - t0) * 1e6)
            samples.sort()
            pc.emit("payload_rtt_" + label, NAME + ".apply_async(bytes)",
                    pc.percentile(samples, 0.5), "us", "lower")


def group_speedup(args):
    tasks, n, reps = pc.speedup_setup(args.quick)

    def serial():
        for _ in range(tasks):
            pc.burn(n)

    for w in range(1, pc.nproc() + 1):
        with make_pool(w) as pool:
            pool.map(pc.noop, range(100))
            ratio, extra = pc.paired_speedup(
                serial, lambda: pool.map(pc.burn, [n] * tasks, chunksize=1), reps)
        pc.emit(f"speedup_w{w}", NAME + ".map", ratio, "x", "higher", tasks=tasks, **extra)


def group_ready(args):
    method = args.start_method or "fork"
    t0 = time.perf_counter()
    pool = make_pool(pc.nproc(), method)
    pool.apply_async(pc.noop, (1,)).get()
    ms = (time.perf_counter() - t0) * 1e3
    pool.terminate()
    pool.join()
    pc.emit("ready_ms", f"{NAME} ({method})", ms, "ms", "lower")


def group_memory(args):
    w = pc.nproc()
    with make_pool(w) as pool:
        pool.map(pc.sleep_then_pid, [0.05] * (2 * w), chunksize=1)
        time.sleep(0.2)  # let every worker go idle again
        pc.emit_memory(NAME + " worker (fork)", [p.pid for p in pool._pool])


if __name__ == "__main__":
    pc.main({"rtt": group_rtt, "tput": group_tput, "payload": group_payload,
             "speedup": group_speedup, "ready": group_ready, "memory": group_memory})
