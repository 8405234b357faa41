"""The ``openai`` backend's throughput and client CPU cost against a loopback server.

The chat-completions peer of the tests (tests/servers/chat_server.py) runs in a
child process with a fixed latency per call (default 200 ms), so the client's
CPU time is measured alone. The ideal throughput of a client that keeps
``max_in_flight`` requests in flight is ``max_in_flight / latency``; the target is
at least 0.9 of it.

Both HTTP clients (``annotate.client``: ``aiohttp``, the hand-written default, and
``sdk``, the official openai SDK) run ``--repeat`` times each,
alternated, against the same server in the same run; the summary gives each one's
median throughput vs ideal and client CPU per request, and the SDK's CPU per
request relative to aiohttp's (target: within 1.5x). Then a run with
``max_in_flight=1`` is the baseline of a client without concurrency, and one with
the response cache warm shows what a re-run costs (both with the first client).

    python bench/annotate.py [--requests 640] [--in-flight 64] [--latency 0.2]
                             [--repeat 3] [--clients aiohttp,sdk]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relshard.spec import OpenAIAnnotate  # noqa: E402
from relshard.workers.annotate.base import Annotation  # noqa: E402
from relshard.workers.annotate.openai_backend import OpenAIAnnotator  # noqa: E402
from tests.unit.workers.annotate.helpers import draft  # noqa: E402


def _serve(latency: float, port_q: mp.Queue, stop: mp.Event) -> None:
    from tests.servers.chat_server import ChatServer

    with ChatServer(latency=latency) as srv:
        port_q.put(srv.port)
        stop.wait()
        port_q.put(srv.max_in_flight)


def _run(base_url: str, n: int, in_flight: int, cache: str | None,
         client: str = "sdk") -> tuple[float, float, int]:
    cfg = OpenAIAnnotate(backend="openai", client=client, base_url=base_url, model="test-vlm",
                         max_in_flight=in_flight, cache=cache)
    ann = OpenAIAnnotator(cfg)
    ann.preflight()
    ann.setup()
    samples = [draft(2, f"k{i}", seed=i) for i in range(n)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = ann.annotate(samples)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ann.teardown()
    ok = sum(isinstance(r, Annotation) for r in results)
    assert ann.client is not None
    if ann.client.posts:
        seen = ann.client.post_seconds / ann.client.posts
        print(f"  ({client}, in_flight={in_flight}: mean exchange seen by the client "
              f"{seen * 1000:.0f} ms; "
              f"throughput / (in_flight / that) = {n / wall / (in_flight / seen):.2f})")
    return wall, cpu, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per client, alternated")
    ap.add_argument("--clients", default="aiohttp,sdk", help="annotate.client values; the "
                    "first also runs the baseline and the cache re-run")
    args = ap.parse_args()
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    ctx = mp.get_context("spawn")
    port_q, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(args.latency, port_q, stop), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{port_q.get(timeout=60)}/v1"
    try:
        n, k, lat = args.requests, args.in_flight, args.latency
        ideal = k / lat
        for client in clients:  # warm-up: imports, first connections
            _run(base_url, min(n, 2 * k), k, None, client)
        figures: dict[str, list[tuple[float, float]]] = {c: [] for c in clients}
        for rep in range(args.repeat):
            for client in clients:
                wall, cpu, ok = _run(base_url, n, k, None, client)
                figures[client].append((n / wall / ideal, cpu / n * 1000))
                print(f"run {rep + 1} {client:8s} max_in_flight={k} latency={lat * 1000:.0f} ms: "
                      f"{n} requests in {wall:.2f} s = {n / wall:.1f} req/s, ideal {ideal:.1f} "
                      f"-> {n / wall / ideal:.2f}x ideal; client CPU {cpu / n * 1000:.2f} "
                      f"ms/request ({cpu / wall:.0%} of one core); {ok}/{n} valid")
        print("summary (median of the runs; target: >= 0.9x ideal, CPU within 1.5x of aiohttp)")
        for client, runs in figures.items():
            ratios = ", ".join(f"{r:.2f}" for r, _ in runs)
            cpus = ", ".join(f"{c:.2f}" for _, c in runs)
            print(f"  {client:8s} x ideal: {ratios} (median "
                  f"{statistics.median(r for r, _ in runs):.2f}); CPU ms/request: {cpus} "
                  f"(median {statistics.median(c for _, c in runs):.2f})")
        if "sdk" in figures and "aiohttp" in figures:
            sdk_cpu = statistics.median(c for _, c in figures["sdk"])
            old_cpu = statistics.median(c for _, c in figures["aiohttp"])
            print(f"  sdk CPU per request / aiohttp: {sdk_cpu / old_cpu:.2f}x")
        base_n = max(5, int(2 / lat))
        bwall, _, _ = _run(base_url, base_n, 1, None, clients[0])
        best = max(r for runs in figures.values() for r, _ in runs) * ideal
        print(f"baseline max_in_flight=1 ({clients[0]}): {base_n / bwall:.1f} req/s -> "
              f"concurrency gives up to {best / (base_n / bwall):.1f}x")
        with tempfile.TemporaryDirectory() as tmp:
            wall, _, _ = _run(base_url, n, k, tmp, clients[0])
            cwall, ccpu, _ = _run(base_url, n, k, tmp, clients[0])
        print(f"re-run with a warm response cache: {n / cwall:.0f} req/s "
              f"({(n / cwall) / (n / wall):.0f}x), CPU {ccpu / n * 1000:.2f} ms per sample")
    finally:
        stop.set()
        print(f"server saw at most {port_q.get(timeout=60)} requests in flight")
        server.join(timeout=30)


if __name__ == "__main__":
    main()
