"""Benchmark the midmix service against nginx serving the same files, on loopback.

1. GET-manifest latency p50/p99 at 1, 16 and 64 concurrent clients: ``GET /mixtures/{v}``
   (midmix, cached manifest) vs nginx serving that version's ``manifest.json``.
2. Shard download throughput (MB/s) at 1, 16 and 64 clients: whole-shard GETs of every shard
   of the mixture, midmix ``/mixtures/{v}/files/{path}`` vs nginx (sendfile on).
3. A 64-client load test of mixed reads (manifest, shard list, shard Range reads, job list) and
   builds (POST /mixtures, a few distinct specs so identical builds collide): counts 5xx answers
   and checks every job id handed out exists at the end and finished ``succeeded``.
4. The job dispatcher's idle CPU: ``midmix serve`` (one process) sitting idle with 10,000
   finished jobs in its store, against the same service with an empty store, in the same run
   (CPU seconds of the service process per second of wall time, from psutil).

The service runs as it would on a network: read and write tokens set, every request carrying one.

Levels 1 and 2 are driven by ``wrk`` (Debian package ``wrk``; C, so the load generator does
not steal the CPU the Python server needs), identical for both peers; the mixed test uses a
small asyncio HTTP/1.1 client because it must read job ids from the answers. The mixture is
built by the real pipeline (``write_sample_dataset`` + ``materialize_mixture``).

Run: python bench/bench_service.py [--workers 2] [--nginx-workers 2] [--seconds 4] [--idle-jobs 10000]
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import MixtureSpec
from midmix.resources import SAMPLE_CORPUS
from midmix.service.jobs.record import Job
from midmix.service.jobs.store import JobStore
from tests.sample_dataset import write_sample_dataset

CORPUS = SAMPLE_CORPUS
LEVELS = (1, 16, 64)
READ_TOKEN, WRITE_TOKEN = "bench-read-token", "bench-write-token"
AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


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
    env |= {"MIDMIX_READ_TOKENS": READ_TOKEN, "MIDMIX_WRITE_TOKENS": WRITE_TOKEN}
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
    temp = "\n".join(
        f"{name}_temp_path {scratch}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
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

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict | None = None
    ) -> tuple[int, int, bytes]:
        """(status, body bytes, body if small) — large bodies are read and discarded."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (AUTH | (headers or {})).items()]
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


async def mixed_load(
    port: int, version: str, shard_paths: list[str], specs: list[dict], clients: int, seconds: float
) -> dict:
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
                    status, _, _ = await conn.request(
                        "GET", rng.choice(shard_paths), headers={"Range": f"bytes={start}-{start + (1 << 18) - 1}"}
                    )
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
            if all(
                state in ("succeeded", "failed", "cancelled", "interrupted") or state.startswith("HTTP")
                for state in states.values()
            ):
                break
            await asyncio.sleep(0.5)
    finally:
        conn.close()
    return states


WRK_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("WRK %d %d %d %d %d %d %d\\n", summary.duration, summary.requests, summary.bytes,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(port: int, path: str, clients: int, seconds: float, script: Path) -> dict:
    """Run wrk on one URL: latencies in ms, MB/s, requests/s, non-2xx/3xx answers and socket errors."""
    command = [
        "wrk",
        f"-t{min(clients, 2)}",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "-H",
        f"Authorization: Bearer {READ_TOKEN}",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK "))
    duration_us, requests, size, p50, p99, bad_status, socket_errors = map(int, line.split()[1:])
    return {
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "rps": requests / (duration_us / 1e6),
        "mb_s": size / duration_us,
        "bad_status": bad_status,
        "socket_errors": socket_errors,
    }


def compare_levels(midmix_port: int, nginx_port: int, version: str, shard: str, seconds: float, script: Path) -> int:
    """Print the manifest-latency and shard-throughput table; returns the count of bad answers."""
    print(
        "\n| clients | manifest p50 / p99 ms, midmix | nginx | manifest req/s midmix / nginx "
        "| shard MB/s midmix | nginx | shard throughput midmix/nginx |"
    )
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for clients in LEVELS:
        ours = wrk(midmix_port, f"/mixtures/{version}", clients, seconds, script)
        peer = wrk(nginx_port, f"/{version}/manifest.json", clients, seconds, script)
        ours_shard = wrk(midmix_port, f"/mixtures/{version}/files/{shard}", clients, seconds, script)
        peer_shard = wrk(nginx_port, f"/{version}/{shard}", clients, seconds, script)
        bad += sum(run["bad_status"] for run in (ours, peer, ours_shard, peer_shard))
        print(
            f"| {clients} | {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} | {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f} "
            f"| {ours['rps']:,.0f} / {peer['rps']:,.0f} | {ours_shard['mb_s']:,.0f} | {peer_shard['mb_s']:,.0f} "
            f"| {ours_shard['mb_s'] / peer_shard['mb_s']:.2f}x |",
            flush=True,
        )
    return bad


def fill_finished_jobs(data_dir: Path, count: int) -> None:
    """``count`` finished build jobs in the service's store, written in one transaction."""
    store = JobStore(data_dir / "jobs")
    with store.transaction() as tx:
        for index in range(count):
            job = Job(id=f"build-{index:012x}", kind="build", key=f"{index:064x}", request={"name": f"s{index}"})
            tx.put(job.finished("succeeded", result="mix-0000000000000000", progress=100.0))


def idle_cpu(data_dir: Path, seconds: float) -> float:
    """CPU seconds per wall second of an idle ``midmix serve`` (one process: HTTP and dispatcher)."""
    process, _ = start_midmix(data_dir, 1)
    try:
        time.sleep(3.0)  # past start-up and the first ticks
        service = psutil.Process(process.pid)
        before, started = service.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, ended = service.cpu_times(), time.monotonic()
    finally:
        stop(process, signal.SIGINT)
    return (after.user + after.system - before.user - before.system) / (ended - started)


def compare_idle(scratch: Path, jobs: int, seconds: float) -> None:
    """Print the dispatcher's idle CPU with ``jobs`` finished jobs against an empty store."""
    full, empty = scratch / "idle-full", scratch / "idle-empty"
    fill_finished_jobs(full, jobs)
    (empty / "jobs").mkdir(parents=True)
    loaded, bare = idle_cpu(full, seconds), idle_cpu(empty, seconds)
    print(
        f"\nidle service, {seconds:g} s: {jobs:,} finished jobs {loaded * 100:.2f}% of a core, "
        f"empty store {bare * 100:.2f}% of a core (ratio {loaded / bare if bare else float('inf'):.2f}x); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="midmix serve --workers")
    parser.add_argument("--nginx-workers", type=int, default=None, help="nginx worker_processes (default: --workers)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement time per level")
    parser.add_argument("--budget", type=int, default=12_000_000, help="phase token budget (sets shard sizes)")
    parser.add_argument("--idle-jobs", type=int, default=10_000, help="finished jobs in the store for the idle test")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle measurement window")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_service needs wrk: apt-get install wrk", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="bench-service-"))
    data_dir = scratch / "data"
    write_sample_dataset(data_dir, CORPUS)
    manifest = materialize_mixture(MixtureSpec.model_validate(spec("bench", args.budget)), data_dir)
    version = manifest["version"]
    shards = [s for c in manifest["phases"][0]["components"] for s in c["shards"]]
    nginx_workers = args.nginx_workers or args.workers
    print(
        f"mixture {version}: {len(shards)} shards, {sum(s['bytes'] for s in shards) / 1e6:.1f} MB "
        f"(largest {shards[0]['bytes'] / 1e6:.1f} MB is the one downloaded); midmix workers={args.workers}, "
        f"nginx workers={nginx_workers}, {args.seconds:g} s per level, cpus={os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    script = scratch / "report.lua"
    script.write_text(WRK_REPORT)
    (scratch / "nginx").mkdir()
    servers: list[subprocess.Popen] = []
    try:
        midmix, midmix_port = start_midmix(data_dir, args.workers)
        servers.append(midmix)
        nginx, nginx_port = start_nginx(data_dir / "mixtures", nginx_workers, scratch / "nginx")
        servers.append(nginx)
        bad = compare_levels(midmix_port, nginx_port, version, shards[0]["path"], args.seconds, script)

        specs = [spec(f"load-{k}", 200_000 + 10_000 * k) for k in range(4)]
        shard_urls = [f"/mixtures/{version}/files/{s['path']}" for s in shards]
        mixed = asyncio.run(mixed_load(midmix_port, version, shard_urls, specs, 64, args.seconds * 2))
        states = asyncio.run(settle_jobs(midmix_port, mixed["job_ids"], timeout=300))
        server_errors = sum(count for status, count in mixed["statuses"].items() if status >= 500)
        lost = [job_id for job_id, state in states.items() if state != "succeeded"]
        print(
            f"\nmixed load, 64 clients, {args.seconds * 2:g} s: {sum(mixed['statuses'].values()):,} requests, "
            f"statuses {dict(sorted(mixed['statuses'].items()))}, 5xx={server_errors}; "
            f"{len(mixed['job_ids'])} distinct jobs for {len(specs)} distinct specs, "
            f"not succeeded={len(lost)} {lost}"
        )
        for process in servers:
            stop(process, signal.SIGINT if process is servers[0] else signal.SIGQUIT)
        compare_idle(scratch, args.idle_jobs, args.idle_seconds)
        return 1 if server_errors or lost or bad else 0
    finally:
        for process in servers:
            stop(process, signal.SIGINT if process is servers[0] else signal.SIGQUIT)
        shutil.rmtree(scratch, ignore_errors=True)


def stop(process: subprocess.Popen, sig: int) -> None:
    """Ask a server to stop; kill it if it has not after 20 s."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


if __name__ == "__main__":
    sys.exit(main())
