"""Curation on a real local Ray cluster gives the same dataset version and rows as a local run.

The test starts its own Ray head (``ray start --head`` on 127.0.0.1, two CPUs) in a fresh
process group with its own temp dir, and ends exactly that group in teardown, so it never
touches another Ray instance on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Ray reads this once, at import: with it a driver uses 127.0.0.1 as its own address, so every
# connection stays on loopback (scripts/test.sh exports it as well).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' (it is in the test extra)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_start_command(port: int, temp_dir: str) -> list[str]:
    """``ray start --head`` bound to loopback, with every listening port chosen free up front."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return [
        ray_bin,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a fresh single-node Ray cluster on 127.0.0.1; torn down by process group."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must fit
    # Both the head and this driver need it, or the driver dials the machine's public address.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env = dict(os.environ)
    log_path = Path(temp_dir) / "ray-start.log"
    # A file, not a pipe: the daemons `ray start` leaves behind inherit it and would hold a pipe open.
    with open(log_path, "w") as log:
        head = subprocess.Popen(ray_start_command(port, temp_dir), env=env, start_new_session=True, stdout=log, stderr=log)
        head.wait(timeout=120)
    address = f"127.0.0.1:{port}"
    try:
        assert head.returncode == 0, log_path.read_text()
        ray.init(address=address, _node_ip_address="127.0.0.1", logging_level="ERROR", log_to_driver=False)
        patch.setenv("RAY_ADDRESS", address)  # curation code that calls ray.init() joins this cluster
        yield address
    finally:
        ray.shutdown()
        _end_process_group(head.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
        patch.undo()


def _end_process_group(pgid: int) -> None:
    """SIGTERM the Ray head's own process group, then SIGKILL what is left after a grace period."""
    for sig, grace_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_the_ray_cluster_listens_on_loopback_only(ray_cluster):
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert [node["NodeManagerAddress"] for node in nodes] == ["127.0.0.1"]
    assert ray.cluster_resources()["CPU"] == 2.0
