"""The ``openai`` backend's throughput and client CPU cost against a loopback server.

The chat-completions peer of the tests (tests/servers/chat_server.py) runs in a
child process with a fixed latency per call (default 200 ms), so the client's
CPU time is measured alone. The ideal throughput of a client that keeps
``max_in_flight`` requests in flight is ``max_in_flight / latency``; the target is
at least 0.9 of it. A second run with ``max_in_flight=1`` is the baseline of a
client without concurrency, and a third, with the response cache warm, shows what
a re-run costs.

    python bench/annotate.py [--requests 640] [--in-flight 64] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
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


def _run(base_url: str, n: int, in_flight: int, cache: str | None) -> tuple[float, float, int]:
    cfg = OpenAIAnnotate(backend="openai", base_url=base_url, model="test-vlm",
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
        print(f"  (in_flight={in_flight}: mean exchange seen by the client {seen * 1000:.0f} ms; "
              f"throughput / (in_flight / that) = {n / wall / (in_flight / seen):.2f})")
    return wall, cpu, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    port_q, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(args.latency, port_q, stop), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{port_q.get(timeout=60)}/v1"
    try:
        n, k, lat = args.requests, args.in_flight, args.latency
        wall, cpu, ok = _run(base_url, n, k, None)
        ideal = k / lat
        print(f"max_in_flight={k} latency={lat * 1000:.0f} ms: {n} requests in {wall:.2f} s = "
              f"{n / wall:.1f} req/s, ideal {ideal:.1f} -> {n / wall / ideal:.2f}x ideal "
              f"(target >= 0.9); {ok}/{n} valid")
        print(f"client CPU per request: {cpu / n * 1000:.2f} ms "
              f"(image encode + JSON + HTTP + parse/validate), {cpu / wall:.0%} of one core")
        base_n = max(5, int(2 / lat))
        bwall, _, _ = _run(base_url, base_n, 1, None)
        print(f"baseline max_in_flight=1: {base_n / bwall:.1f} req/s -> concurrency gives "
              f"{(n / wall) / (base_n / bwall):.1f}x")
        with tempfile.TemporaryDirectory() as tmp:
            _run(base_url, n, k, tmp)
            cwall, ccpu, _ = _run(base_url, n, k, tmp)
        print(f"re-run with a warm response cache: {n / cwall:.0f} req/s "
              f"({(n / cwall) / (n / wall):.0f}x), CPU {ccpu / n * 1000:.2f} ms per sample")
    finally:
        stop.set()
        print(f"server saw at most {port_q.get(timeout=60)} requests in flight")
        server.join(timeout=30)


if __name__ == "__main__":
    main()
