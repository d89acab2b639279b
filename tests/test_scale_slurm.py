"""A Slurm executor config submits the four curation stages as a correctly chained set of jobs.

There is no Slurm here: a stand-in ``sbatch`` on PATH records each script and its arguments and
answers like the real one ("Submitted batch job N"), so datatrove's real launch code runs end to
end without submitting anything.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import dill
import pytest

from midmix.pipelines.curation.config import CurationConfig, SlurmExecutor
from midmix.pipelines.curation.curate import curate_corpus, plan_curation
from midmix.pipelines.curation.readers import CorpusReader
from tests.conftest import make_data_dir

FAKE_SBATCH = """#!/usr/bin/env bash
# Record one submission: the script (last argument) and the other arguments; print a job id.
set -euo pipefail
dir="{record_dir}"
n=$(( $(ls "$dir" | grep -c '\\.sbatch$' || true) + 101 ))
cp "${{@: -1}}" "$dir/$n.sbatch"
printf '%s\\n' "${{@:1:$#-1}}" > "$dir/$n.args"
echo "Submitted batch job $n"
"""

STAGES = ("annotate", "dedup", "write", "publish")


def sbatch_directives(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.MULTILINE))


def install_fake_sbatch(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in sbatch first on PATH; returns the folder its records go to."""
    record_dir = root / "submitted"
    record_dir.mkdir()
    bin_dir = root / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(record_dir=record_dir))
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return record_dir


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, default_models_dir, corpus_subset):
    """Curate with a Slurm executor config; returns (config, data dir, result, jobs by id)."""
    root = tmp_path_factory.mktemp("slurm")
    data_dir = make_data_dir(root / "data", default_models_dir)
    lines = corpus_subset.read_text().splitlines(keepends=True)
    inputs = []
    for index in range(3):  # a task reads whole files: three files make a three-task array
        path = root / f"part-{index}.jsonl"
        path.write_text("".join(lines[index::3]))
        inputs.append(str(path))
    config = CurationConfig(
        inputs=inputs,
        executor=SlurmExecutor(
            kind="slurm",
            tasks=3,
            partition="cpu",
            time="02:00:00",
            cpus_per_task=2,
            mem_per_cpu_gb=4,
            qos="high",
            venv_path="/shared/midmix/.venv/bin/activate",
            sbatch_args={"account": "midmix"},
        ),
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        submissions = install_fake_sbatch(root, monkeypatch)
        result = curate_corpus(config, data_dir)
    jobs = {
        int(path.stem): (path.read_text(), path.with_suffix(".args").read_text().split())
        for path in sorted(submissions.glob("*.sbatch"))
    }
    return config, data_dir, result, jobs


def test_slurm_config_submits_and_returns_without_publishing(slurm_run):
    config, data_dir, result, _ = slurm_run
    assert result["state"] == "submitted"
    assert result["version"] == plan_curation(config, data_dir).version
    assert not (data_dir / "datasets" / result["version"]).exists()


def test_each_stage_is_one_job_array_plus_a_stats_merge_chained_after_it(slurm_run):
    _, _, _, jobs = slurm_run
    assert sorted(jobs) == list(range(101, 109))
    names = [sbatch_directives(script)["job-name"] for script, _ in jobs.values()]
    assert names == [name for stage in STAGES for name in (f"midmix-{stage}", f"midmix-{stage}")]
    main_jobs = [101, 103, 105, 107]
    for job_id in main_jobs:
        assert "merge_stats" not in jobs[job_id][0]
        assert "merge_stats" in jobs[job_id + 1][0]
        assert sbatch_directives(jobs[job_id + 1][0])["dependency"] == f"afterok:{job_id}"
    dependencies = [next((a for a in jobs[job_id][1] if a.startswith("--dependency=")), None) for job_id in main_jobs]
    assert dependencies == [None, "--dependency=afterok:101", "--dependency=afterok:103", "--dependency=afterok:105"]


def test_sbatch_scripts_carry_the_configured_resources(slurm_run):
    _, _, _, jobs = slurm_run
    arrays = []
    for job_id in (101, 103, 105, 107):
        script = jobs[job_id][0]
        directives = sbatch_directives(script)
        assert (directives["partition"], directives["time"], directives["account"]) == ("cpu", "02:00:00", "midmix")
        assert (directives["cpus-per-task"], directives["mem-per-cpu"], directives["qos"]) == ("2", "4G", "high")
        # The compute node runs `launch_pickled_pipeline` from the configured environment.
        assert re.search(r"^source /shared/midmix/\.venv/bin/activate$", script, flags=re.MULTILINE)
        arrays.append(directives["array"])
        assert re.search(r"^srun +-l -n 1 launch_pickled_pipeline \S+/executor\.pik$", script, flags=re.MULTILINE)
    # Stages 1 and 3 run one task per input file; dedup and publish are single global tasks.
    assert arrays == ["0-2", "0-0", "0-2", "0-0"]


def test_pickled_stage_one_reads_the_configured_inputs(slurm_run):
    config, _, _, jobs = slurm_run
    pickle_path = re.search(r"launch_pickled_pipeline (\S+)", jobs[101][0]).group(1)
    with open(pickle_path, "rb") as handle:
        executor = dill.load(handle)
    assert executor.world_size == 3
    reader = executor.pipeline[0]
    assert isinstance(reader, CorpusReader)
    assert [unit.url for unit in reader.units] == config.inputs
