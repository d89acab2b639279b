"""A mixture build on Slurm: four chained job arrays submitted at once, and the pickled stages, run as
a compute node would run them, publish the same bytes as a local build.

A stand-in ``sbatch`` (``tests/test_scale_slurm.py``) records each script; each stage's pickled
executor is then loaded and every array index run in order, as ``launch_pickled_pipeline`` does.
"""

from __future__ import annotations

import re
import shutil

import dill

from midmix.pipelines.executors import LocalExecutor, SlurmExecutor
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset
from tests.test_mixture_parallel import _files, _spec
from tests.test_scale_slurm import install_fake_sbatch, sbatch_directives


def test_slurm_build_submits_four_chained_arrays_whose_pickles_publish_the_local_bytes(tmp_path, monkeypatch):
    write_sample_dataset(tmp_path / "local", SAMPLE_CORPUS, limit=1200)
    shutil.copytree(tmp_path / "local" / "datasets", tmp_path / "slurm" / "datasets")
    local = materialize_mixture(parse_spec(_spec()), tmp_path / "local", executor=LocalExecutor())

    submissions = install_fake_sbatch(tmp_path, monkeypatch)
    executor = SlurmExecutor(kind="slurm", tasks=3, partition="cpu", sbatch_args={"account": "midmix"})
    result = materialize_mixture(parse_spec(_spec()), tmp_path / "slurm", executor=executor)
    assert (result["state"], result["version"]) == ("submitted", local["version"])
    assert not (tmp_path / "slurm" / "mixtures" / local["version"]).exists()

    scripts = [path.read_text() for path in sorted(submissions.glob("*.sbatch"))]
    arrays = [sbatch_directives(s) for s in scripts if "merge_stats" not in s]
    assert [(a["job-name"], a["array"]) for a in arrays] == [
        ("midmix-1-encode", "0-2"), ("midmix-2-sequence", "0-0"), ("midmix-3-write", "0-2"), ("midmix-4-publish", "0-0"),
    ]  # fmt: skip
    # What a compute node has: its node list, and scontrol to expand it.
    monkeypatch.setenv("SLURM_NODELIST", "localhost")
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.write_text('#!/usr/bin/env bash\necho "${@: -1}"\n')
    scontrol.chmod(0o755)
    for script in scripts:
        if "merge_stats" in script:
            continue
        with open(re.search(r"launch_pickled_pipeline (\S+)", script).group(1), "rb") as handle:
            stage = dill.load(handle)
        for rank in range(stage.world_size):
            stage._run_for_rank(rank)
    published = tmp_path / "slurm" / "mixtures" / local["version"]
    assert _files(published) == _files(tmp_path / "local" / "mixtures" / local["version"])
