"""Processes of a job: liveness that survives pid reuse, whole-group kills, a token-free environment.

A worker runs in a session of its own, so its process group holds everything it starts
(datatrove's pool and manager, a local Ray node, ``sbatch``): one ``killpg`` ends them all.
Liveness compares a pid's start time (psutil, so not only Linux) with the one recorded.
"""

from __future__ import annotations

import os
import signal

import psutil

# The service's settings travel to its HTTP worker processes in this variable; job workers never see it.
SETTINGS_ENV = "MIDMIX_SERVICE_SETTINGS_JSON"
# A job worker's settings: the service's, without tokens.
JOB_SETTINGS_ENV = "MIDMIX_JOB_SETTINGS_JSON"


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """Whether ``pid`` is still the process that was recorded as starting at ``started``."""
    if pid is None:
        return False
    now_started = process_start_time(pid)
    if now_started is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return False
    return started is None or abs(now_started - started) < 0.01


def kill_group(leader: int | None, started: float | None) -> bool:
    """SIGKILL the process group led by ``leader``; False if there was nothing (left) to kill.

    A leader that is alive with another start time is a reused pid: nothing of ours. A dead
    leader's group may still hold its children, and the kernel does not hand out a pid that is
    still a group id, so the group is ours and is killed.
    """
    if leader is None:
        return False
    if process_start_time(leader) is not None and not process_alive(leader, started):
        return False
    try:
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def exit_reason(code: int) -> str:
    """How a worker ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def is_token_variable(name: str) -> bool:
    """midmix's own token settings and the serialized settings that carry them."""
    return name == SETTINGS_ENV or (name.startswith("MIDMIX_") and "TOKEN" in name)


def worker_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any midmix token, plus ``extra``: what a job worker gets.

    Workers hand their environment on (datatrove's Slurm scripts use ``--export=ALL``, Ray workers
    inherit it), so a token here would reach every node a curation runs on.
    """
    return {name: value for name, value in os.environ.items() if not is_token_variable(name)} | extra
