"""Where pipeline tasks run: datatrove's local, Ray and Slurm executors, chosen by one config model.

Curation and mixture builds describe their work as ``Stage``s (a datatrove pipeline and a task
count) and hand them to ``run_stages``, which is the only place that knows the executors:

- **local**: tasks in this process (``workers: 1`` or one task) or in a process pool. datatrove's own
  pool waits forever when a worker process dies, so pools run on ``concurrent.futures`` here, where a
  dead worker fails its tasks instead of hanging.
- **ray**: datatrove's ``RayPipelineExecutor`` on the cluster at ``RAY_ADDRESS`` (it resubmits tasks
  whose worker died).
- **slurm**: every stage submitted at once as a job array that depends on the previous one (Slurm
  requeues a job whose node failed); ``run_stages`` returns before the work is done, and running the
  same command again after a failure resubmits only the incomplete tasks.

For local and Ray the stages run one after the other and a stage whose tasks failed (raised, or
their process died) is run again for those tasks only, up to ``retries`` times: datatrove skips a
task whose completion marker exists. Tasks must therefore be idempotent (write outputs atomically,
skip what exists), which is what makes the output identical whether or not a task was retried.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datatrove.executor import LocalPipelineExecutor
from pydantic import BaseModel, ConfigDict, Field

from midmix.config_files import read_mapping_file, validate_model
from midmix.errors import MidmixError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalExecutor(_Strict):
    kind: Literal["local"] = "local"
    tasks: int = Field(1, ge=1)
    workers: int = Field(-1, ge=-1, description="-1: one worker per task")
    retries: int = Field(2, ge=0, description="times a failed or killed task is run again")


class RayExecutor(_Strict):
    kind: Literal["ray"]
    tasks: int = Field(1, ge=1)
    workers: int = Field(-1, ge=-1)
    cpus_per_task: int = Field(1, ge=1)
    retries: int = Field(
        2, ge=0, description="times a failed task is run again (datatrove also resubmits dead workers)"
    )


class SlurmExecutor(_Strict):
    kind: Literal["slurm"]
    tasks: int = Field(1, ge=1)
    partition: str
    time: str = "04:00:00"
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: int = Field(2, ge=1)
    qos: str = "normal"
    venv_path: str | None = Field(None, description="virtualenv activate script the jobs source")
    sbatch_args: dict[str, str] = Field(default_factory=dict)


ExecutorSpec = LocalExecutor | RayExecutor | SlurmExecutor


class _ExecutorFile(_Strict):
    executor: ExecutorSpec = Field(discriminator="kind")


def load_executor(path: str | Path, tasks: int | None = None) -> ExecutorSpec:
    """An executor from a YAML/JSON file (``{kind: ray, tasks: 8}``), or local; ``tasks`` overrides its count."""
    data = read_mapping_file(path, "executor config") if path else {"kind": "local"}
    if tasks is not None:
        data = {**data, "tasks": tasks}
    return validate_model(_ExecutorFile, {"executor": data}, "executor config", f"in {path or '--tasks'}").executor


class StageFailed(MidmixError):
    """Tasks of a stage kept failing (not a user mistake): the work done so far is kept for a rerun."""


@dataclass(frozen=True)
class Stage:
    """One datatrove stage: its name (also its log folder), pipeline and task count."""

    name: str
    pipeline: list
    tasks: int


def in_process(spec: ExecutorSpec, tasks: int) -> bool:
    """Whether every task of a stage with ``tasks`` tasks runs in this process (so a progress callback works)."""
    return spec.kind == "local" and (spec.workers == 1 or tasks == 1)


def datatrove_executor(
    spec: ExecutorSpec, pipeline: list, tasks: int, logging_dir: Path, depends: Any, name: str
) -> Any:
    """The configured datatrove executor for one stage; the only executor-specific construction."""
    if spec.kind == "local":
        workers = min(spec.workers if spec.workers != -1 else tasks, tasks)
        return PoolLocalExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), depends=depends)
    if spec.kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=spec.workers,
            cpus_per_task=spec.cpus_per_task,
            logging_dir=str(logging_dir),
            depends=depends,
        )
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        pipeline,
        tasks=tasks,
        time=spec.time,
        partition=spec.partition,
        job_name=f"midmix-{name}",
        cpus_per_task=spec.cpus_per_task,
        mem_per_cpu_gb=spec.mem_per_cpu_gb,
        qos=spec.qos,
        venv_path=spec.venv_path,
        sbatch_args=spec.sbatch_args,
        logging_dir=str(logging_dir),
        depends=depends,
    )


class PoolLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor whose pool survives a dead worker: its tasks fail, the rest go on.

    One worker keeps datatrove's own loop in this process; a failing task stops that attempt and
    the next attempt (``run_stages``) resumes after the completed ones.
    """

    def run(self):
        if self.workers == 1 or self.tasks == 1:
            return super().run()
        if self.depends is not None:
            if not self.depends._launched:
                self.depends.run()
            if self.depends.get_incomplete_ranks(skip_completed=True):
                raise MidmixError(f"the stage before {self.logging_dir.path} did not complete; run again to resume")
        self._launched = True
        ranks = self.get_incomplete_ranks(range(self.tasks))
        if not ranks:
            return None
        self.save_executor_as_json()
        errors = []
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported the steps' modules (datatrove, pyarrow, the
        # tokenizers) once, instead of importing them in every worker; only effective before its first use.
        context.set_forkserver_preload(sorted({type(step).__module__ for step in self.pipeline}))
        with ProcessPoolExecutor(max_workers=min(self.workers, len(ranks)), mp_context=context) as pool:
            futures = [pool.submit(self._run_for_rank, rank) for rank in ranks]
            for future in as_completed(futures):
                try:
                    future.result()
                except Exception as error:  # a task's own error, or BrokenProcessPool when a worker died
                    errors.append(error)
        if errors:
            raise errors[0]
        return None


def run_stages(spec: ExecutorSpec, stages: list[Stage], logs: Path) -> bool:
    """Run ``stages`` in order; True when all completed here, False when submitted to Slurm.

    A ``MidmixError`` raised by a task (a user mistake the data revealed) ends the run at once;
    any other failure reruns that stage's incomplete tasks, ``spec.retries`` times at most.
    """
    with datatrove_logs_to(logs / "datatrove.log"):
        if spec.kind == "slurm":
            last = None
            for stage in stages:
                last = datatrove_executor(spec, stage.pipeline, stage.tasks, logs / stage.name, last, stage.name)
            last.run()
            return False
        for stage in stages:
            _run_with_retries(spec, stage, logs / stage.name)
    return True


def _run_with_retries(spec: ExecutorSpec, stage: Stage, logging_dir: Path) -> None:
    from loguru import logger

    error: BaseException | None = None
    started = time.perf_counter()
    for attempt in range(spec.retries + 1):
        executor = datatrove_executor(spec, stage.pipeline, stage.tasks, logging_dir, None, stage.name)
        try:
            executor.run()
        except MidmixError:
            raise
        except Exception as failure:  # retried below; the last one is reported
            error = failure
        incomplete = executor.get_incomplete_ranks(range(stage.tasks))
        if not incomplete:
            logger.info(
                f"midmix: stage {stage.name}: {stage.tasks} tasks done in {time.perf_counter() - started:.2f} s"
            )
            return
        if attempt < spec.retries:
            logger.warning(
                f"midmix: stage {stage.name}: tasks {incomplete} failed ({type(error).__name__ if error else 'see task logs'}); running them again ({attempt + 1}/{spec.retries})"
            )
    detail = f"{type(error).__name__}: {error}" if error else _last_error_line(logging_dir)
    raise StageFailed(
        f"stage {stage.name}: {len(incomplete)} of {stage.tasks} tasks still failing after {spec.retries} retries "
        f"({detail}); task logs in {logging_dir / 'logs'}; run the same command again to resume"
    )


def _last_error_line(logging_dir: Path) -> str:
    """The last exception line in the stage's task logs (Ray reports a task's error only there)."""
    lines = [
        line.strip()
        for log in sorted((logging_dir / "logs").glob("task_*.log"))
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if "Error" in line or "Exception" in line
    ]
    return lines[-1][-300:] if lines else "no error in the task logs"


@contextmanager
def datatrove_logs_to(path: Path) -> Iterator[None]:
    """Send datatrove's console logging to a file: the CLI shows our progress, not task logs.

    Worker processes (local pool, forkserver) write to file descriptor 2, so that is redirected
    too, not only ``sys.stderr``; ``midmix.progress.ProgressBars`` keeps a handle on the real terminal.
    """
    from loguru import logger

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log_file:
        sys.stderr.flush()
        saved_stream, saved_fd = sys.stderr, os.dup(2)
        os.dup2(log_file.fileno(), 2)
        sys.stderr = log_file
        logger.remove()
        logger.add(log_file, level="INFO")
        try:
            yield
        finally:
            log_file.flush()
            sys.stderr = saved_stream
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            logger.remove()
            logger.add(sys.stderr, level="WARNING")
