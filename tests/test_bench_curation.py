"""The curation benchmarks run end to end on a tiny grown corpus, and score what they claim to.

Real parts only: the sample corpus, the default fastText models, midmix's curation and
datatrove's stock blocks, each run as the benchmark runs them (child processes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from bench_dedup import score
from grow_corpus import PlantedPair, grow, jaccard, load_truth, shingles, write_corpus

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

TINY = 300


@pytest.fixture(scope="module")
def tiny_corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[dict], list[PlantedPair]]:
    return grow(TINY, seed=1)


def test_grown_corpus_has_the_planted_shares(tiny_corpus):
    docs, pairs = tiny_corpus
    kinds = [pair.kind for pair in pairs]
    assert len(docs) == TINY
    assert len({doc["id"] for doc in docs}) == TINY
    assert (kinds.count("exact"), kinds.count("near"), kinds.count("control")) == (
        15,
        24,
        9,
    )


def test_planted_pairs_have_the_recorded_jaccard_in_their_band(tiny_corpus):
    docs, pairs = tiny_corpus
    texts = {doc["id"]: doc["text"] for doc in docs}
    bands = {"exact": (1.0, 1.0), "near": (0.80, 0.97), "control": (0.50, 0.70)}
    for pair in pairs:
        true = jaccard(shingles(texts[pair.a]), shingles(texts[pair.b]))
        assert true == pytest.approx(pair.jaccard, abs=1e-6)
        assert bands[pair.kind][0] <= true <= bands[pair.kind][1]
        assert (texts[pair.a] == texts[pair.b]) == (pair.kind == "exact")


def test_growth_is_deterministic_to_the_byte(tiny_corpus, tmp_path):
    docs, pairs = tiny_corpus
    write_corpus(docs, pairs, tmp_path / "a.jsonl.gz")
    write_corpus(*grow(TINY, seed=1), tmp_path / "b.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (
        tmp_path / "b.jsonl.gz"
    ).read_bytes()
    assert load_truth(tmp_path / "b.jsonl.gz") == pairs


def test_score_counts_misses_false_merges_and_exact_survivors():
    base = " ".join(f"word{i}" for i in range(100))
    near = base.replace("word50", "other")  # 5 of 96 shingles change: Jaccard 0.9
    control = (
        " ".join(f"word{i}" for i in range(50))
        + " "
        + " ".join(f"x{i}" for i in range(30))
    )
    texts = {
        "a": base,
        "a2": near,
        "b": "alpha beta gamma delta epsilon zeta eta theta",
        "c": control,
        "e": base,
    }
    truth = [
        PlantedPair("near", "a", "a2", 0.9),
        PlantedPair("exact", "a", "e", 1.0),
        PlantedPair("control", "b", "c", 0.6),
    ]
    clusters = {"a": "a", "a2": "a", "b": "b", "c": "b", "e": "e"}
    result = score(clusters, kept={"a", "b", "e"}, texts=texts, truth=truth)
    assert (
        result["near_recall"] == 1.0
    )  # a2 removed, so the pair does not survive twice
    assert result["near_recall_same_cluster"] == 1.0
    assert result["exact_recall"] == 0.0
    assert result["control_merged"] == 1.0
    assert (
        result["precision"] == 0.5
    )  # a, a2 true; b, c merged without being near-duplicates
    assert (
        result["precision_vs_kept"] == 0.5
    )  # a2 removed against a (ok), c removed against b (wrong)
    assert result["exact_survivors"] == 1  # a and e both kept with the same text
    assert result["near_recall_by_jaccard"] == {"0.90-1.00": 1.0}


def _work_with_models(tmp_path: Path, default_models_dir: Path) -> Path:
    """A bench work dir whose models are the session's trained defaults, so nothing retrains."""
    work = tmp_path / "work"
    shutil.copytree(default_models_dir, work / "models")
    return work


def test_bench_curation_measures_ours_and_stock(tmp_path, default_models_dir):
    work = _work_with_models(tmp_path, default_models_dir)
    command = [
        sys.executable,
        str(BENCH / "bench_curation.py"),
        "--sizes",
        str(TINY),
        "--stock-sizes",
        str(TINY),
        "--work",
        str(work),
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=600
    ).stdout
    rows = json.loads((work / f"curation-results-{TINY}.json").read_text())
    assert [(row["pipeline"], row["docs"]) for row in rows] == [
        ("ours", TINY),
        ("stock", TINY),
    ]
    for row in rows:
        assert 0 < row["docs_out"] < TINY  # both filter and dedup something
        assert row["cpu_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["docs_per_cpu_s"] == pytest.approx(
            TINY / row["cpu_s"], rel=0.02
        )  # cpu_s is rounded to 0.01
    assert f"ratio ours/stock at {TINY}:" in output


def test_bench_dedup_finds_every_planted_exact_duplicate(tmp_path, default_models_dir):
    work = _work_with_models(tmp_path, default_models_dir)
    command = [
        sys.executable,
        str(BENCH / "bench_dedup.py"),
        "--docs",
        str(TINY),
        "--work",
        str(work),
        "--skip-stock",
    ]
    subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    ours = json.loads((work / f"dedup-results-{TINY}.json").read_text())["ours"]
    assert ours["docs"] == TINY
    assert ours["exact_recall"] == 1.0
    assert ours["exact_survivors"] == 0
    assert ours["kept"] == TINY - ours["docs_removed"]
