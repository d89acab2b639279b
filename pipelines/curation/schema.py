"""The fixed Parquet schema of a curated dataset: the contract between curation and mixtures.

Scores whose names vary by configuration (domain labels, quality classifiers) live in maps, so
the schema itself never changes with the config (datatrove's FastTextClassifierFilter writes
one metadata column per label, which breaks a fixed schema).
"""

from __future__ import annotations

import pyarrow as pa

SIGNAL_COLUMNS: tuple[str, ...] = (
    "sig_n_words",
    "sig_mean_word_length",
    "sig_symbol_ratio",
    "sig_alpha_word_ratio",
    "sig_stopword_ratio",
    "sig_bullet_line_ratio",
    "sig_ellipsis_line_ratio",
    "sig_duplicate_line_ratio",
    "sig_top_2gram_ratio",
    "sig_non_ascii_ratio",
)

_SCORE_MAP = pa.map_(pa.string(), pa.float32())

CURATED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("lang_score", pa.float32()),
        pa.field("domain", pa.string()),
        pa.field("domain_scores", _SCORE_MAP),
        pa.field("quality", _SCORE_MAP),
        pa.field("quality_score", pa.float32()),
        *[pa.field(name, pa.float32()) for name in SIGNAL_COLUMNS],
        pa.field("dup_cluster", pa.string()),
        pa.field("dup_cluster_size", pa.int32()),
        pa.field("n_chars", pa.int32()),
        pa.field("n_tokens", pa.int32()),
        pa.field("meta", pa.string()),
    ]
)

DROPPED_SCHEMA = CURATED_SCHEMA.append(pa.field("drop_step", pa.string())).append(pa.field("drop_reason", pa.string()))

SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.uint32()), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("quality", pa.float32()),
        pa.field("n_tokens", pa.int32()),
    ]
)
"""Mixture phase and eval shards; rows are in training order."""

SHARD_ROW_GROUP_ROWS = 1024
