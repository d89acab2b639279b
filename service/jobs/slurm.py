"""The Slurm jobs a curation submits: named after the service job, so they can be found and cancelled.

datatrove submits every stage (and a stats merge after each) with ``sbatch``; sbatch takes
``SBATCH_JOB_NAME`` from the environment over the script's ``--job-name``, so a worker that sets
it gives all of them one name: ``squeue --name`` finds the ones still queued or running, and
``scancel --name`` ends them all, including jobs of earlier attempts of the same service job.
"""

from __future__ import annotations

import subprocess


def slurm_job_name(job_id: str) -> str:
    """The Slurm job name every submission of service job ``job_id`` carries."""
    return f"midmix-{job_id}"


def active_slurm_jobs(job_id: str) -> list[str]:
    """Ids of this service job's Slurm jobs that are still pending or running."""
    output = _run(["squeue", "--noheader", "--format=%i", f"--name={slurm_job_name(job_id)}"])
    return output.split()


def cancel_slurm_jobs(job_id: str) -> str | None:
    """Cancel this service job's Slurm jobs; a message saying what to do by hand if that failed."""
    try:
        _run(["scancel", f"--name={slurm_job_name(job_id)}"])
    except RuntimeError as error:
        return f"cancelled, but its Slurm jobs may still run: {error}; cancel them with scancel --name={slurm_job_name(job_id)}"
    return None


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"{command[0]} failed: {error}") from None
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with code {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout
