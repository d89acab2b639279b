"""A mixture build on a real Ray cluster (127.0.0.1) gives the same version and bytes as a local build.

The cluster is the single-node head of ``tests/test_scale_ray.py`` (two CPUs, its own process group);
tasks run in Ray worker processes, not in this one. Issue 12 asks for this build across a head and two
worker nodes (separate ``ray start`` processes on 127.0.0.1); when that helper lands in ``tests/``
(``local_ray_cluster(workers=2)``), this test should take it instead of ``ray_cluster``.
"""

from __future__ import annotations

import shutil

import pytest

from midmix.pipelines.executors import LocalExecutor, RayExecutor
from midmix.pipelines.mixtures import build
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import parse_spec
from midmix.resources import SAMPLE_CORPUS
from tests.sample_dataset import write_sample_dataset
from tests.test_mixture_parallel import _files, _spec
from tests.test_scale_ray import ray_cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow  # starts a Ray head and its workers


def test_a_ray_build_gives_the_same_bytes_as_a_local_one(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(build, "MIN_UNIT_DOCS", 200)  # several units per task
    write_sample_dataset(tmp_path / "local", SAMPLE_CORPUS, limit=1200)
    shutil.copytree(tmp_path / "local" / "datasets", tmp_path / "ray" / "datasets")
    local = materialize_mixture(parse_spec(_spec()), tmp_path / "local", executor=LocalExecutor(tasks=1))
    on_ray = materialize_mixture(parse_spec(_spec()), tmp_path / "ray", executor=RayExecutor(kind="ray", tasks=2))
    assert on_ray == local
    assert _files(tmp_path / "ray" / "mixtures" / local["version"]) == _files(
        tmp_path / "local" / "mixtures" / local["version"]
    )
    assert not list((tmp_path / "ray" / ".staging").glob("build-*"))
