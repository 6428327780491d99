#!/usr/bin/env python3
"""Measures mayfly side by side with its yardsticks, in one session.

Run through scripts/bench, which installs and builds what this needs. Every
figure is a median of several runs; comparisons alternate their runs so that
machine drift hits both sides alike. Nothing here asserts a speed.
"""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAYFLY = os.path.join(ROOT, "target/release/mayfly")
BARE = os.path.join(ROOT, "target/release/examples/bare_churn")
WASMTIME = os.path.join(ROOT, ".tools/wasmtime/bin/wasmtime")
HELLO = os.path.join(ROOT, "examples/target/wasm32-wasip2/release/hello.wasm")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path="/", timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                r.read()
                return
        except Exception:
            time.sleep(0.0005)
    raise RuntimeError(f"nothing answered on port {port}")


def start(cmd, env=None):
    full = dict(os.environ, **(env or {}))
    return subprocess.Popen(cmd, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(port, path="/", seconds=5, threads=2, conns=64):
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def mayfly_web(manifest, port, env=None):
    env = dict(env or {}, PORT=str(port), HOST="127.0.0.1")
    return start([MAYFLY, "run", "web", "--manifest", manifest], env)


def section(title):
    print(f"\n## {title}", flush=True)


def http_vs_wasmtime():
    section("HTTP: examples/hello, wrk -t2 -c64 -d5s on loopback (median of %d, alternated)" % RUNS)
    results = {"mayfly": [], "wasmtime serve": []}
    manifest = os.path.join(ROOT, "examples/hello/mayfly.toml")
    for _ in range(RUNS):
        for name in results:
            port = free_port()
            if name == "mayfly":
                proc = mayfly_web(manifest, port)
            else:
                proc = start([WASMTIME, "serve", "-Scli", "--addr", f"127.0.0.1:{port}", HELLO])
            wait_http(port)
            results[name].append(wrk(port))
            stop(proc)
    med = {n: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for n, v in results.items()}
    for name, (rps, p99) in med.items():
        print(f"{name:15} {rps:9.0f} requests/s   p99 {p99:6.2f} ms")
    print(f"ratio: {med['mayfly'][0] / med['wasmtime serve'][0]:.2f}x the requests/s, "
          f"p99 {med['mayfly'][1] / med['wasmtime serve'][1]:.2f}x")


def churn():
    section("bench churn: examples/hello, 3 s per run (median of %d)" % RUNS)
    for allocator in ["pooling", "on-demand"]:
        for tasks in [1, 2]:
            runs = []
            for _ in range(RUNS):
                out = subprocess.run(
                    [MAYFLY, "bench", "churn", HELLO, "--duration", "3s", "--concurrency", str(tasks),
                     "--allocator", allocator, "--json"],
                    capture_output=True, text=True, check=True, env=dict(os.environ, RUST_LOG="warn")).stdout
                runs.append(json.loads(out))
            rate = statistics.median(r["instances_per_sec"] for r in runs)
            p50 = statistics.median(r["p50_us"] for r in runs)
            p99 = statistics.median(r["p99_us"] for r in runs)
            print(f"{allocator:9} {tasks} task(s): {rate:8.0f} instances/s   p50 {p50:6.1f} us   p99 {p99:6.1f} us")
    section("bench churn (pooling, 1 task) vs a tuned bare wasmtime loop, alternated (median of %d)" % RUNS)
    ours, bare = [], []
    for _ in range(RUNS):
        out = subprocess.run([MAYFLY, "bench", "churn", HELLO, "--duration", "3s", "--json"],
                             capture_output=True, text=True, check=True,
                             env=dict(os.environ, RUST_LOG="warn")).stdout
        ours.append(json.loads(out)["instances_per_sec"])
        out = subprocess.run([BARE, HELLO, "3"], capture_output=True, text=True, check=True).stdout
        bare.append(float(out.split()[0]))
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"mayfly {o:.0f}/s, bare wasmtime loop {b:.0f}/s: {o / b:.2f}x")


def start_times():
    section("exec -> first response of `mayfly run web` (examples/hello)")
    manifest = os.path.join(ROOT, "examples/hello/mayfly.toml")
    cache = os.path.join(ROOT, ".mayfly/bench-cache")
    for label, clear in [("cold (compile)", True), ("warm (cache)", False)]:
        times = []
        for _ in range(20 if not clear else 5):
            if clear:
                subprocess.run(["rm", "-rf", cache])
            port = free_port()
            t0 = time.monotonic()
            proc = mayfly_web(manifest, port, {"MAYFLY_CACHE_DIR": cache})
            wait_http(port)
            times.append((time.monotonic() - t0) * 1e3)
            stop(proc)
        print(f"{label:15} median {statistics.median(times):6.1f} ms over {len(times)} runs")
    times = []
    for _ in range(20):
        port = free_port()
        t0 = time.monotonic()
        proc = start([WASMTIME, "serve", "-Scli", "--addr", f"127.0.0.1:{port}", HELLO])
        wait_http(port)
        times.append((time.monotonic() - t0) * 1e3)
        stop(proc)
    print(f"{'wasmtime serve':15} median {statistics.median(times):6.1f} ms over 20 runs (its own cache)")

    section("SIGTERM -> exit, nothing in flight (median of 20)")
    times = []
    for _ in range(20):
        port = free_port()
        proc = mayfly_web(manifest, port, {"MAYFLY_CACHE_DIR": cache})
        wait_http(port)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        times.append((time.monotonic() - t0) * 1e3)
    print(f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms")


def spinner_latency():
    section("hello next to a spinning guest: wrk -t1 -c4 -d5s on /ok of examples/spin, 2 threads")
    manifest = os.path.join(ROOT, "examples/spin/mayfly.toml")
    port = free_port()
    proc = mayfly_web(manifest, port, {"MAYFLY_THREADS": "2"})
    wait_http(port, "/ok")
    alone = wrk(port, "/ok", seconds=5, threads=1, conns=4)
    spinners = [subprocess.Popen(["sh", "-c", f"while :; do curl -s -o /dev/null http://127.0.0.1:{port}/; done"])
                for _ in range(2)]
    time.sleep(0.5)
    busy = wrk(port, "/ok", seconds=5, threads=1, conns=4)
    for s in spinners:
        s.kill()
        s.wait()
    stop(proc)
    print(f"without spinners: p99 {alone[1]:.2f} ms ({alone[0]:.0f} requests/s)")
    print(f"with 2 spinners (one per runtime thread): p99 {busy[1]:.2f} ms ({busy[0]:.0f} requests/s)")


def jobs():
    section("jobs end to end: examples/noop, SQLite WAL synchronous=NORMAL (median of %d)" % RUNS)
    manifest = os.path.join(ROOT, "examples/noop/mayfly.toml")
    for workers in [1, 2]:
        runs = []
        for _ in range(RUNS):
            out = subprocess.run([MAYFLY, "bench", "jobs", "--manifest", manifest, "--jobs", "10000",
                                  "--workers", str(workers), "--json"], capture_output=True, text=True,
                                 check=True).stdout
            runs.append(json.loads(out))
        print(f"10000 jobs, {workers} worker(s): {statistics.median(r['jobs_per_sec'] for r in runs):.0f} jobs/s")
    out = subprocess.run([MAYFLY, "bench", "jobs", "--manifest", manifest, "--jobs", "5000", "--rate", "1000",
                          "--json"], capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    print(f"offered 1000 jobs/s: enqueue -> done p50 {r['latency_p50_ms']:.0f} ms, p99 {r['latency_p99_ms']:.0f} ms")


def up_ready():
    section("`mayfly up` web=2 worker=2 (examples/wordcount), warm cache: each child's exec -> ready")
    manifest = os.path.join(ROOT, "examples/wordcount/mayfly.toml")
    ready = []
    for attempt in range(2):  # the first run fills the compile cache
        port = free_port()
        proc = subprocess.Popen([MAYFLY, "up", "--manifest", manifest, "--formation", "web=2,worker=2"],
                                env=dict(os.environ, PORT=str(port), HOST="127.0.0.1"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = []
        timer = threading.Timer(60, proc.kill)  # never wait forever on a child that does not start
        timer.start()
        for line in proc.stdout:
            m = re.search(r"\(ready in ([\d.]+) ms\)", line)
            if m:
                ready.append(float(m.group(1)))
                if len(ready) == 4:
                    break
        timer.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print("ready in " + ", ".join(f"{t:.1f} ms" for t in ready))


def main():
    steps = sys.argv[1:] or ["http", "churn", "start", "spinner", "jobs", "up"]
    table = {"http": http_vs_wasmtime, "churn": churn, "start": start_times,
             "spinner": spinner_latency, "jobs": jobs, "up": up_ready}
    for step in steps:
        table[step]()


if __name__ == "__main__":
    main()
