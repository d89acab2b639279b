"""A curated dataset version written straight from a labelled JSONL corpus, without curation.

Tests and benchmarks of mixtures use it so they neither wait for nor depend on the curation
pipeline: it writes the exact curated contract (``CURATED_SCHEMA`` Parquet + manifest.json) with
deterministic stand-in scores derived from the corpus labels (``quality_hint``, ``domain``) and a
hash of each id. ``repeat`` > 1 appends perturbed copies (paragraphs rotated, new ids) to make a
larger corpus from the same real text.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import midmix
from midmix.hashing import sha256_file, version_id
from midmix.pipelines.curation.schema import CURATED_SCHEMA, SIGNAL_COLUMNS
from midmix.pipelines.tokenizer import Tokenizer, TokenizerSpec
from midmix.publish import publishing

DOMAINS = ("web", "code", "math", "qa", "academic", "other")
_BASE_QUALITY = {"high": 0.7, "low": 0.0, None: 0.3}


def _unit(doc_id: str, salt: str) -> float:
    """A deterministic number in [0, 1) from an id."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{doc_id}".encode()).digest()[:8], "big") / 2**64


def read_corpus(path: Path, limit: int | None = None, repeat: int = 1) -> list[dict]:
    """Documents of a gzip JSONL corpus; copy k of each (k >= 1) has rotated paragraphs and id suffix #k."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in islice(handle, limit)]
    out = list(docs)
    for k in range(1, repeat):
        for doc in docs:
            paragraphs = doc["text"].split("\n\n")
            shift = k % len(paragraphs)
            out.append({**doc, "id": f"{doc['id']}#{k}", "text": "\n\n".join(paragraphs[shift:] + paragraphs[:shift])})
    return out


def _row(doc: dict, n_tokens: int) -> dict:
    text, doc_id = doc["text"], doc["id"]
    words = text.split()
    n_chars = len(text)
    quality = _BASE_QUALITY.get(doc.get("quality_hint"), 0.3) + 0.3 * _unit(doc_id, "hq")
    signals = {name: None for name in SIGNAL_COLUMNS}
    signals.update(
        sig_n_words=float(len(words)),
        sig_mean_word_length=sum(map(len, words)) / len(words) if words else 0.0,
        sig_symbol_ratio=text.count("#") / max(1, len(words)),
        sig_alpha_word_ratio=sum(w.isalpha() for w in words) / max(1, len(words)),
        sig_non_ascii_ratio=sum(ord(ch) > 127 for ch in text) / max(1, n_chars),
    )
    return {
        "id": doc_id, "text": text, "source": doc.get("source"), "lang": doc.get("lang"), "lang_score": 0.9,
        "domain": doc.get("domain"),
        "domain_scores": [(d, 0.9 if d == doc.get("domain") else 0.02) for d in DOMAINS],
        "quality": [("fasttext_hq", quality), ("edu", round(5 * quality * (0.5 + _unit(doc_id, "edu")), 2))],
        "quality_score": quality, **signals, "dup_cluster": doc_id, "dup_cluster_size": 1,
        "n_chars": n_chars, "n_tokens": n_tokens, "meta": json.dumps(doc.get("meta") or {}, sort_keys=True),
    }  # fmt: skip


def write_sample_dataset(
    data_dir: Path,
    corpus: Path,
    limit: int | None = None,
    repeat: int = 1,
    tokenizer: TokenizerSpec | None = None,
) -> dict:
    """Publish the corpus as a curated dataset version under ``data_dir/datasets``; returns its manifest."""
    docs = read_corpus(corpus, limit, repeat)
    tok = Tokenizer(tokenizer or TokenizerSpec())
    counts = tok.count_batch([doc["text"] for doc in docs])
    version = version_id(
        "ds",
        {"sample": sha256_file(corpus), "limit": limit, "repeat": repeat, "tokenizer": tok.sha256,
         "code_version": midmix.__version__},
    )  # fmt: skip
    final = Path(data_dir) / "datasets" / version
    if (final / "manifest.json").is_file():
        return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
    table = pa.Table.from_pylist([_row(doc, n) for doc, n in zip(docs, counts)], schema=CURATED_SCHEMA)
    with publishing(final) as staging:
        (staging / "data").mkdir()
        pq.write_table(table, staging / "data" / "part-00000.parquet", compression="zstd", row_group_size=1024)  # as curation writes them
        manifest = _manifest(version, corpus, docs, counts, tok, staging)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def _manifest(version: str, corpus: Path, docs: list[dict], counts: list[int], tok: Tokenizer, staging: Path) -> dict:
    part = staging / "data" / "part-00000.parquet"
    tokens_by = {key: Counter() for key in ("domain", "lang", "source")}
    docs_by = {key: Counter() for key in ("domain", "lang", "source")}
    for doc, n in zip(docs, counts):
        for key, tokens in tokens_by.items():
            tokens[doc.get(key)] += n
            docs_by[key][doc.get(key)] += 1
    return {
        "version": version, "kind": "dataset",
        "inputs": [{"path": str(corpus), "sha256": sha256_file(corpus), "bytes": corpus.stat().st_size}],
        "config": {"sample_dataset": True}, "models": {}, "code_version": midmix.__version__,
        "steps": [], "counts": {"docs": len(docs), "tokens": sum(counts)},
        "tokens_by": {k: dict(v) for k, v in tokens_by.items()}, "docs_by": {k: dict(v) for k, v in docs_by.items()},
        "quality_histograms": {},
        "files": [{"path": "data/part-00000.parquet", "sha256": sha256_file(part), "bytes": part.stat().st_size,
                   "rows": len(docs)}],
        "tokenizer": tok.describe(),
    }  # fmt: skip
