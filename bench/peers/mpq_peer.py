"""Peer: multiprocessing.Queue and multiprocessing.Pipe (queue and pipe rows)."""
import multiprocessing as mp
import time

import peer_common as pc


def produce(q, n):
    for i in range(n):
        q.put(i)


def produce_pages(q, n):
    # 4 KiB bytes items, as bench_queue's std::string(4096) items (a new
    # object per put, as the C++ producer builds a new string per item).
    for i in range(n):
        q.put(bytes([97 + i % 26]) * 4096)


def echo_queue(inq, outq, n):
    for _ in range(n):
        outq.put(inq.get())


def echo_conn(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def send_conn(conn, n):
    for i in range(n):
        conn.send(i)


def group_queue(args):
    n = 20_000 if args.quick else 200_000
    q = mp.Queue()
    p = mp.Process(target=produce, args=(q, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    secs = time.perf_counter() - t0
    p.join()
    pc.emit("queue_tput", "multiprocessing.Queue", n / secs, "items/s", "higher", items=n)

    n = 20_000 if args.quick else 200_000
    q = mp.Queue()
    p = mp.Process(target=produce_pages, args=(q, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    secs = time.perf_counter() - t0
    p.join()
    pc.emit("queue_tput_4KiB", "multiprocessing.Queue (4 KiB bytes)", n / secs, "items/s",
            "higher", items=n)

    n = 300 if args.quick else 5000
    inq, outq = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo_queue, args=(inq, outq, n + 1))
    p.start()
    inq.put(0)
    outq.get()  # the echo process is up
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        inq.put(i)
        outq.get()
        samples.append((time.perf_counter() - t0) * 1e6)
    p.join()
    samples.sort()
    pc.emit("queue_rtt_p50", "multiprocessing.Queue (2 queues)", pc.percentile(samples, 0.5),
            "us", "lower")


def group_pipe(args):
    n = 300 if args.quick else 5000
    a, b = mp.Pipe()
    p = mp.Process(target=echo_conn, args=(b, n + 1))
    p.start()
    a.send(0)
    a.recv()
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        a.send(i)
        a.recv()
        samples.append((time.perf_counter() - t0) * 1e6)
    p.join()
    samples.sort()
    pc.emit("pipe_rtt_p50", "multiprocessing.Pipe", pc.percentile(samples, 0.5), "us", "lower")
    pc.emit("pipe_rtt_p99", "multiprocessing.Pipe", pc.percentile(samples, 0.99), "us", "lower")

    a, b = mp.Pipe()
    p = mp.Process(target=echo_conn, args=(b, n + 1))
    p.start()
    page = b"p" * 4096
    a.send(page)
    a.recv()
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        a.send(page)
        a.recv()
        samples.append((time.perf_counter() - t0) * 1e6)
    p.join()
    samples.sort()
    pc.emit("pipe_rtt_4KiB_p50", "multiprocessing.Pipe (4 KiB bytes)",
            pc.percentile(samples, 0.5), "us", "lower")

    n = 20_000 if args.quick else 200_000
    a, b = mp.Pipe(duplex=False)
    p = mp.Process(target=send_conn, args=(b, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        a.recv()
    secs = time.perf_counter() - t0
    p.join()
    pc.emit("pipe_tput", "multiprocessing.Pipe (one way)", n / secs, "msgs/s", "higher", msgs=n)


if __name__ == "__main__":
    pc.main({"queue": group_queue, "pipe": group_pipe})
