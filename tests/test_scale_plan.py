"""bench/plan_scale.py: the arithmetic of the 1B-document plan on inputs worked out by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "plan_scale.py"
GB = 2**30


@pytest.fixture(scope="module")
def plan_scale():
    spec = importlib.util.spec_from_file_location("plan_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["plan_scale"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def rate(plan_scale, **fields):
    defaults = {"stage": "s", "source": "test", "unit": "docs", "task_mem_mb": 0.0, "parallel": True}
    return plan_scale.StageRate(**{**defaults, **fields})


def test_parallel_stage_runs_one_task_per_input_file_up_to_the_cores(plan_scale):
    stage_rate = rate(plan_scale, per_core_s=1000.0, task_mem_mb=512.0)
    [stage] = plan_scale.plan(1_000_000, 10, 100.0, 1000, (stage_rate,))
    # 1e6 docs / 1000 docs per CPU-s = 1000 CPU-s; 1000 files > 10 cores: 10 tasks, 100 s; 512 MB each.
    assert (stage.tasks, stage.wall_s, stage.mem_per_task_gb, stage.mem_concurrent_gb) == (10, 100.0, 0.5, 5.0)
    assert stage.cpu_hours == pytest.approx(1000 / 3600)
    [few_files] = plan_scale.plan(1_000_000, 10, 100.0, 250_000, (stage_rate,))
    assert (few_files.tasks, few_files.wall_s) == (4, 250.0)  # 4 files: 4 tasks, whatever the cores


def test_token_rate_stage_counts_tokens_and_holds_one_file_at_a_time(plan_scale):
    stage_rate = rate(plan_scale, unit="tokens", per_core_s=1e6, file_bytes_per_doc=1024.0)
    [stage] = plan_scale.plan(1_000_000, 10, 500.0, 100_000, (stage_rate,))
    # 5e8 tokens / 1e6 per CPU-s = 500 CPU-s over 10 tasks = 50 s; 1024 B x 100,000 docs per file.
    assert (stage.tasks, stage.wall_s) == (10, 50.0)
    assert stage.mem_per_task_gb == 1024e5 / GB
    assert stage.mem_concurrent_gb == 1024e6 / GB


def test_corpus_state_is_held_whole_by_every_task(plan_scale):
    stage_rate = rate(plan_scale, per_core_s=50.0, corpus_bytes_per_doc=100.0, task_mem_mb=1024.0)
    [stage] = plan_scale.plan(2_000_000, 8, 1.0, 1000, (stage_rate,))
    assert stage.wall_s == 2_000_000 / 50 / 8
    assert stage.mem_per_task_gb == 1 + 2e8 / GB
    assert stage.mem_concurrent_gb == 8 * (1 + 2e8 / GB)


def test_global_stage_gets_no_faster_with_more_cores(plan_scale):
    stage_rate = rate(plan_scale, per_core_s=10_000.0, parallel=False, corpus_bytes_per_doc=500.0)
    few, many = (plan_scale.plan(10_000_000, cores, 1.0, 1000, (stage_rate,))[0] for cores in (2, 1000))
    assert few.tasks == many.tasks == 1
    assert few.wall_s == many.wall_s == 1000.0
    assert few.mem_per_task_gb == many.mem_per_task_gb == 5e9 / GB


def test_bad_sizes_are_rejected(plan_scale):
    with pytest.raises(ValueError, match="at least 1"):
        plan_scale.plan(0, 4, 1.0, 1000)


def test_cli_reads_a_rates_table_and_prints_the_plan(tmp_path):
    rates = [
        {
            "stage": "score",
            "unit": "docs",
            "per_core_s": 2000.0,
            "parallel": True,
            "task_mem_mb": 256.0,
            "source": "hand",
        },
        {
            "stage": "cluster",
            "unit": "docs",
            "per_core_s": 1e5,
            "parallel": False,
            "task_mem_mb": 0.0,
            "corpus_bytes_per_doc": 64.0,
            "source": "hand",
        },
    ]
    table = tmp_path / "rates.json"
    table.write_text(json.dumps(rates))
    command = [sys.executable, str(SCRIPT), "--docs", "1000000000", "--cores", "500", "--rates", str(table)]
    run = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True, timeout=60)
    score, cluster = json.loads(run.stdout)
    # 1e9 docs in 10,000 files of 100,000: 500 tasks; 1e9 / 2000 / 500 = 1000 s; 256 MB x 500.
    assert (score["tasks"], score["wall_s"], score["mem_concurrent_gb"]) == (500, 1000.0, 125.0)
    assert (cluster["tasks"], cluster["wall_s"], cluster["mem_per_task_gb"]) == (1, 10000.0, 64e9 / GB)
    text = subprocess.run([*command, "--sources"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "16.7min" in text and "2.8h" in text  # 1000 s and 10000 s
    assert "- cluster: 100,000 docs/CPU-s; hand" in text


def test_built_in_rates_all_cite_a_measurement(plan_scale):
    assert [rate.stage[0] for rate in plan_scale.RATES] == ["1", "2", "3", "4"]
    for stage_rate in plan_scale.RATES:
        assert "bench/RESULTS.md" in stage_rate.source and "python bench/" in stage_rate.source, stage_rate.stage
