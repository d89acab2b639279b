"""Benchmark the midmix service against nginx serving the same files, on loopback.

1. GET-manifest latency p50/p99 at 1, 16 and 64 concurrent clients: ``GET /mixtures/{v}``
   (midmix, cached manifest) vs nginx serving that version's ``manifest.json``.
2. Shard download throughput (MB/s) at 1, 16 and 64 clients: whole-shard GETs of every shard
   of the mixture, midmix ``/mixtures/{v}/files/{path}`` vs nginx (sendfile on).
3. A 64-client load test of mixed reads (manifest, shard list, shard Range reads, job list) and
   builds (POST /mixtures, a few distinct specs so identical builds collide): counts 5xx answers
   and checks every job id handed out exists at the end and finished ``succeeded``.

Both servers get the same number of worker processes; the load generator is one asyncio
process speaking minimal HTTP/1.1 with keep-alive, identical for both peers. The mixture is
built by the real pipeline (``write_sample_dataset`` + ``materialize_mixture``).

Run: python bench/bench_service.py [--workers 2] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.mixture.build import materialize_mixture  # noqa: E402
from pipelines.mixture.sample_dataset import write_sample_dataset  # noqa: E402
from pipelines.mixture.spec import MixtureSpec  # noqa: E402

CORPUS = REPO / "data" / "sample-corpus" / "corpus.jsonl.gz"
LEVELS = (1, 16, 64)


def spec(name: str, budget: int) -> dict:
    """A one-phase web/code/math spec over the latest dataset."""
    def domain(value: str) -> dict:
        return {"column": "domain", "op": "==", "value": value}

    return {"name": name, "phases": [{"name": "stable", "token_budget": budget, "components": [
        {"name": "web", "datasets": ["latest"], "select": domain("web"), "weight": 0.5, "max_epochs": 20},
        {"name": "code", "datasets": ["latest"], "select": domain("code"), "weight": 0.3, "max_epochs": 20},
        {"name": "math", "datasets": ["latest"], "select": domain("math"), "weight": 0.2, "max_epochs": 20}]}]}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def start_midmix(data_dir: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDMIX_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "midmix", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir",
         str(data_dir), "--workers", str(workers), "--job-workers", "1"], cwd=REPO, env=env,
    )  # fmt: skip
    wait_listening(port)
    return process, port


def start_nginx(root: Path, workers: int, scratch: Path) -> tuple[subprocess.Popen, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read our 0700 temp dirs
    temp = "\n".join(f"{name}_temp_path {scratch}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = scratch / "nginx.conf"
    config.write_text(f"""
{user}
worker_processes {workers};
daemon off;
pid {scratch}/nginx.pid;
error_log {scratch}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; keepalive_timeout 60;
  {temp}
  types {{ application/json json; }}
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; etag on; }}
}}
""")
    process = subprocess.Popen([nginx, "-c", str(config), "-p", str(scratch)])
    wait_listening(port)
    return process, port


class Connection:
    """One keep-alive HTTP/1.1 connection: the minimal client both peers are measured with."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, int, bytes]:
        """(status, body bytes, body if small) — large bodies are read and discarded."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append("Content-Type: application/json")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        kept = b""
        remaining = length
        while remaining:
            chunk = await self.reader.read(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed mid-body")
            if length <= 65536:
                kept += chunk
            remaining -= len(chunk)
        return status, length, kept

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_clients(clients: int, seconds: float, work) -> list:
    """Run ``work(conn, results)`` in a loop on ``clients`` connections for ``seconds``."""
    results: list = []
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        conn = Connection(work.port)
        try:
            while time.perf_counter() < deadline:
                await work(conn, results, index)
        finally:
            conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return results


class ManifestWork:
    def __init__(self, port: int, path: str):
        self.port, self.path = port, path

    async def __call__(self, conn: Connection, results: list, index: int) -> None:
        started = time.perf_counter()
        status, _, _ = await conn.request("GET", self.path)
        assert status == 200, status
        results.append(time.perf_counter() - started)


class ShardWork:
    def __init__(self, port: int, paths: list[str]):
        self.port, self.paths = port, paths
        self.turn = 0

    async def __call__(self, conn: Connection, results: list, index: int) -> None:
        path = self.paths[(index + self.turn) % len(self.paths)]
        self.turn += 1
        status, length, _ = await conn.request("GET", path)
        assert status == 200, status
        results.append(length)


def measure_manifest(port: int, path: str, clients: int, seconds: float) -> dict:
    latencies = sorted(asyncio.run(run_clients(clients, seconds, ManifestWork(port, path))))
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "rps": len(latencies) / seconds}


def measure_shards(port: int, paths: list[str], clients: int, seconds: float) -> float:
    started = time.perf_counter()
    sizes = asyncio.run(run_clients(clients, seconds, ShardWork(port, paths)))
    return sum(sizes) / (time.perf_counter() - started) / 1e6


async def mixed_load(port: int, version: str, shard_paths: list[str], specs: list[dict], clients: int, seconds: float) -> dict:
    statuses: dict[int, int] = {}
    job_ids: set[str] = set()
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        conn = Connection(port)
        rng = random.Random(index)
        try:
            while time.perf_counter() < deadline:
                pick = rng.random()
                if pick < 0.05:
                    status, _, body = await conn.request("POST", "/mixtures", json.dumps(rng.choice(specs)).encode())
                    if status == 202:
                        job_ids.add(json.loads(body)["id"])
                elif pick < 0.35:
                    status, _, _ = await conn.request("GET", f"/mixtures/{version}")
                elif pick < 0.5:
                    status, _, _ = await conn.request("GET", f"/mixtures/{version}/phases/stable/shards")
                elif pick < 0.6:
                    status, _, _ = await conn.request("GET", "/jobs")
                else:
                    start = rng.randrange(0, 1 << 20)
                    status, _, _ = await conn.request("GET", rng.choice(shard_paths),
                                                      headers={"Range": f"bytes={start}-{start + (1 << 18) - 1}"})
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"statuses": statuses, "job_ids": job_ids}


async def settle_jobs(port: int, job_ids: set[str], timeout: float) -> dict[str, str]:
    conn = Connection(port)
    deadline = time.perf_counter() + timeout
    states: dict[str, str] = {}
    try:
        while time.perf_counter() < deadline:
            states = {}
            for job_id in sorted(job_ids):
                status, _, body = await conn.request("GET", f"/jobs/{job_id}")
                states[job_id] = json.loads(body)["state"] if status == 200 else f"HTTP {status}"
            if all(state in ("succeeded", "failed", "cancelled", "interrupted") or state.startswith("HTTP")
                   for state in states.values()):
                break
            await asyncio.sleep(0.5)
    finally:
        conn.close()
    return states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both midmix and nginx")
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement time per level")
    parser.add_argument("--budget", type=int, default=12_000_000, help="phase token budget (sets shard sizes)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-service-"))
    data_dir = scratch / "data"
    write_sample_dataset(data_dir, CORPUS)
    manifest = materialize_mixture(MixtureSpec.model_validate(spec("bench", args.budget)), data_dir)
    version = manifest["version"]
    shards = [s for c in manifest["phases"][0]["components"] for s in c["shards"]]
    print(f"mixture {version}: {len(shards)} shards, {sum(s['bytes'] for s in shards) / 1e6:.1f} MB; "
          f"workers={args.workers}, {args.seconds:g} s per level, cpus={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")

    midmix, midmix_port = start_midmix(data_dir, args.workers)
    nginx_dir = scratch / "nginx"
    nginx_dir.mkdir()
    nginx, nginx_port = start_nginx(data_dir / "mixtures", args.workers, nginx_dir)
    try:
        print("\n| clients | manifest p50 / p99 ms, midmix | nginx | shard MB/s midmix | nginx | throughput ratio midmix/nginx |")
        print("|---|---|---|---|---|---|")
        for clients in LEVELS:
            ours = measure_manifest(midmix_port, f"/mixtures/{version}", clients, args.seconds)
            peer = measure_manifest(nginx_port, f"/{version}/manifest.json", clients, args.seconds)
            ours_mbs = measure_shards(midmix_port, [f"/mixtures/{version}/files/{s['path']}" for s in shards], clients,
                                      args.seconds)
            peer_mbs = measure_shards(nginx_port, [f"/{version}/{s['path']}" for s in shards], clients, args.seconds)
            print(f"| {clients} | {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} | {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f} "
                  f"| {ours_mbs:,.0f} | {peer_mbs:,.0f} | {ours_mbs / peer_mbs:.2f}x |", flush=True)

        specs = [spec(f"load-{k}", 200_000 + 10_000 * k) for k in range(4)]
        mixed = asyncio.run(mixed_load(midmix_port, version, [f"/mixtures/{version}/files/{s['path']}" for s in shards],
                                       specs, 64, args.seconds * 2))
        states = asyncio.run(settle_jobs(midmix_port, mixed["job_ids"], timeout=300))
        server_errors = sum(count for status, count in mixed["statuses"].items() if status >= 500)
        lost = [job_id for job_id, state in states.items() if state != "succeeded"]
        print(f"\nmixed load, 64 clients, {args.seconds * 2:g} s: {sum(mixed['statuses'].values()):,} requests, "
              f"statuses {dict(sorted(mixed['statuses'].items()))}, 5xx={server_errors}; "
              f"{len(mixed['job_ids'])} distinct jobs for {len(specs)} distinct specs, "
              f"not succeeded={len(lost)} {lost}")
        return 1 if server_errors or lost else 0
    finally:
        for process in (midmix, nginx):
            process.send_signal(signal.SIGINT if process is midmix else signal.SIGQUIT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
