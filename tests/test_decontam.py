"""Decontamination finds the 30 HumanEval problems planted in the sample corpus, and only them."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from datatrove.data import Document

from midmix.pipelines.curation.decontam import Decontaminate, build_eval_index
from midmix.pipelines.curation.steps.normalize import normalize_text
from midmix.pipelines.curation.steps.signals import HeuristicSignals
from midmix.pipelines.curation.steps.words import split_words
from tests.conftest import HUMANEVAL, SAMPLE_CORPUS


@pytest.fixture(scope="module")
def humaneval_index():
    return build_eval_index([str(HUMANEVAL)], 13)


def test_index_covers_every_problem(humaneval_index) -> None:
    assert len(humaneval_index.item_set) == 164
    assert set(humaneval_index.item_set) == {"humaneval"}
    assert (humaneval_index.item_ngrams > 0).all()


def test_finds_exactly_the_planted_humaneval_docs(humaneval_index) -> None:
    with gzip.open(SAMPLE_CORPUS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    flagged = set()
    for start in range(0, len(records), 512):
        chunk = records[start : start + 512]
        batch = split_words([normalize_text(record["text"]) for record in chunk])
        hits = humaneval_index.contaminating_sets(batch.hashes, batch.offsets, 13, 0.5)
        flagged |= {record["id"] for record, hit in zip(chunk, hits) if hit == "humaneval"}
    planted = {record["id"] for record in records if record["source"] == "humaneval"}
    assert len(planted) == 30
    assert flagged == planted


def test_eval_item_embedded_in_a_longer_document_is_dropped_with_the_set_name(tmp_path) -> None:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as handle:
        problem = json.loads(handle.readline())["text"]
    eval_file = tmp_path / "my_bench.jsonl"
    eval_file.write_text(json.dumps({"id": "p0", "text": problem}) + "\n")
    prose = " ".join(f"word{i}" for i in range(300))
    docs = [
        Document(text=f"{prose}\n{problem}\n{prose}", id="contains", metadata={}),
        Document(text=prose + " " + " ".join(problem.split()[:8]), id="short-quote", metadata={}),
        Document(text=prose, id="clean", metadata={}),
    ]
    step = Decontaminate([str(eval_file)], ngram=13, overlap_threshold=0.5)
    out = list(step.run(HeuristicSignals().run(iter(docs))))
    assert [doc.metadata.get("drop_reason") for doc in out] == ["decontam:my_bench", None, None]


def test_overlap_threshold_is_a_share_of_the_item(humaneval_index) -> None:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as handle:
        words = json.loads(handle.readline())["text"].split()
    half = " ".join(words[: len(words) // 3])
    batch = split_words([half])
    assert humaneval_index.contaminating_sets(batch.hashes, batch.offsets, 13, 0.9) == [None]
    assert humaneval_index.contaminating_sets(batch.hashes, batch.offsets, 13, 0.1) == ["humaneval"]
    assert np.all(humaneval_index.hashes[1:] > humaneval_index.hashes[:-1])
