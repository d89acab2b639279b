"""Decontamination finds eval items pasted into longer documents, edited, and only them."""

from __future__ import annotations

import gzip
import json

import pytest
from datatrove.data import Document

from midmix.errors import MidmixError
from midmix.pipelines.curation.config import DecontamConfig
from midmix.pipelines.curation.decontam import Decontaminate, build_eval_index, check_eval_sets
from midmix.pipelines.curation.steps.normalize import normalize_text
from midmix.pipelines.curation.steps.signals import HeuristicSignals
from midmix.pipelines.curation.steps.words import split_words
from tests.conftest import HUMANEVAL, SAMPLE_CORPUS

CONFIG = DecontamConfig()


@pytest.fixture(scope="module")
def humaneval_index():
    return build_eval_index(CONFIG)


def flagged(index, texts: list[str], config: DecontamConfig = CONFIG) -> list[str | None]:
    batch = split_words([normalize_text(text) for text in texts])
    return index.contaminating_sets(batch.hashes, batch.offsets, config.ngram, config.run_gap)


def humaneval_problem(number: int = 0) -> str:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle][number]


def test_index_covers_every_problem(humaneval_index) -> None:
    assert len(humaneval_index.component_set) == 164
    assert set(humaneval_index.component_set) == {"humaneval"}
    assert (humaneval_index.needed > 0).all()


def test_finds_exactly_the_planted_humaneval_docs(humaneval_index) -> None:
    with gzip.open(SAMPLE_CORPUS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    found = set()
    for start in range(0, len(records), 512):
        chunk = records[start : start + 512]
        hits = flagged(humaneval_index, [record["text"] for record in chunk])
        found |= {record["id"] for record, hit in zip(chunk, hits) if hit == "humaneval"}
    planted = {record["id"] for record in records if record["source"] == "humaneval"}
    assert len(planted) == 30
    assert found == planted


def test_renamed_function_and_reflowed_whitespace_inside_a_longer_file_is_found(humaneval_index) -> None:
    problem = humaneval_problem(0)  # has_close_elements(numbers, threshold)
    edited = problem.replace("has_close_elements", "near_pairs").replace("threshold", "limit")
    edited = "\n".join("    " + " ".join(line.split()) for line in edited.splitlines())  # reflowed
    prose = "\n".join(f"def helper_{i}(value):\n    return value * {i} + offset_{i}" for i in range(60))
    assert flagged(humaneval_index, [f"{prose}\n{edited}\n{prose}", prose]) == ["humaneval", None]


def test_a_short_quote_is_not_contamination(humaneval_index) -> None:
    words = humaneval_problem(0).split()
    quote = " ".join(words[:12])
    assert flagged(humaneval_index, [f"Some prose about lists. {quote} And more prose follows here."]) == [None]


def test_shared_ngrams_count_for_every_item_and_templates_for_none(tmp_path) -> None:
    template = "Answer the following question with one number and show your working step by step please"
    items = [f"{template}. Question {i}: a farmer has {i} cows and buys {i + 3} goats at the market on day {i}" for i in range(30)]
    twins = ["Tom reads twelve pages every evening and his sister Ann reads nine pages every morning before school"] * 2
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps({"question": text}) + "\n" for text in items + twins))
    config = DecontamConfig(eval_files=[{"path": str(path), "fields": ["question"]}], ngram=5, min_run_ngrams=8)
    index = build_eval_index(config)
    texts = [f"Worksheet.\n{items[7]}\nEnd.", f"{template}. How many legs does a spider have?", f"Story: {twins[1]}."]
    assert flagged(index, texts, config) == ["mini", None, "mini"]


def test_question_and_answer_fields_are_found_on_their_own(tmp_path) -> None:
    path = tmp_path / "gsm.jsonl"
    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
    answer = "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. #### 72"
    path.write_text(json.dumps({"question": question, "answer": answer}) + "\n")
    config = DecontamConfig(eval_files=[{"path": str(path), "name": "gsm8k", "fields": ["question", "answer"]}])
    step = Decontaminate(config)
    prose = " ".join(f"word{i}" for i in range(200))
    docs = [
        Document(text=f"{prose}\nQ: {question}\n{prose}", id="question", metadata={}),
        Document(text=f"{prose}\nSolution: {answer}\n{prose}", id="answer", metadata={}),
        Document(text=prose, id="clean", metadata={}),
    ]
    out = list(step.run(HeuristicSignals().run(iter(docs))))
    assert [doc.metadata.get("drop_reason") for doc in out] == ["decontam:gsm8k", "decontam:gsm8k", None]


def test_eval_file_without_the_named_field_is_a_one_line_error(tmp_path) -> None:
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps({"question": "What is 2+2?", "choices": ["3", "4"], "answer": 1}) + "\n")
    config = DecontamConfig(eval_files=[{"path": str(path), "fields": ["question", "options"]}])
    with pytest.raises(MidmixError) as caught:
        check_eval_sets(config)
    assert str(caught.value) == (
        f"eval file {path}: item 1 has no field 'options' (it has: answer, choices, question); "
        "set decontam.eval_files[].fields to fields it has"
    )
