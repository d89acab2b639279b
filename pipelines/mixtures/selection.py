"""Selections compiled to DuckDB SQL over the catalog's ``docs`` table.

A component's *pool* is every document of its datasets (an id present in several datasets
counts once, from the first listed) minus the held-out eval documents; its selection is a
WHERE clause over the pool. Percentile rules (``top_percent``) are resolved against the pool
to absolute thresholds first, so what was applied can be recorded and reproduced.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import duckdb
import pyarrow as pa

from midmix.pipelines.mixtures.spec import (
    AllOf,
    AnyOf,
    CurriculumSpec,
    EvalSplitSpec,
    Predicate,
    Selection,
)

EVAL_TABLE = "eval_ids"
_SQL_OPS = {"==": "=", "!=": "<>", ">=": ">=", ">": ">", "<=": "<=", "<": "<"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def column_expr(column: str) -> str:
    """SQL for a spec column name: map entries (``quality.fasttext_hq``) become map lookups."""
    for prefix, map_column in (("quality.", "quality"), ("domain_scores.", "domain_scores")):
        if column.startswith(prefix):
            return f"{map_column}[{_quote(column[len(prefix):])}]"
    return f'"{column}"'


def iter_predicates(node: Selection | None) -> Iterator[Predicate]:
    """Every predicate of a selection tree, in tree order."""
    if node is None:
        return
    if isinstance(node, Predicate):
        yield node
        return
    for child in node.all if isinstance(node, AllOf) else node.any:
        yield from iter_predicates(child)


def percent_predicates(node: Selection | None) -> list[Predicate]:
    """The ``top_percent`` / ``bottom_percent`` predicates of a selection, in tree order."""
    return [p for p in iter_predicates(node) if p.op in ("top_percent", "bottom_percent")]


def threshold_names(predicates: list[Predicate]) -> list[str]:
    """Manifest keys for resolved thresholds: the column, numbered when a column repeats."""
    names: list[str] = []
    for predicate in predicates:
        name, n = predicate.column, 2
        while name in names:
            name, n = f"{predicate.column}#{n}", n + 1
        names.append(name)
    return names


def selection_sql(node: Selection | None, thresholds: list[float | None]) -> tuple[str, list]:
    """A WHERE clause and its parameters; ``thresholds`` are the resolved percent rules in tree order."""
    remaining = list(thresholds)
    sql, params = _node_sql(node, remaining) if node is not None else ("TRUE", [])
    return sql, params


def _node_sql(node: Selection, thresholds: list[float | None]) -> tuple[str, list]:
    if isinstance(node, (AllOf, AnyOf)):
        joiner = " AND " if isinstance(node, AllOf) else " OR "
        parts = [_node_sql(child, thresholds) for child in (node.all if isinstance(node, AllOf) else node.any)]
        return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, params in parts for p in params]
    column = column_expr(node.column)
    if node.op == "top_percent":
        return f"({column} >= ?)", [thresholds.pop(0)]
    if node.op == "bottom_percent":
        return f"({column} <= ?)", [thresholds.pop(0)]
    if node.op in ("in", "not_in"):
        marks = ", ".join("?" for _ in node.value)
        return f"({column} {'NOT IN' if node.op == 'not_in' else 'IN'} ({marks}))", list(node.value)
    return f"({column} {_SQL_OPS[node.op]} ?)", [node.value]


def pool_sql(datasets: list[str], exclude_eval: bool) -> tuple[str, list]:
    """A subquery of the component's candidate documents (one row per id)."""
    marks = ", ".join("?" for _ in datasets)
    sql = f"SELECT * FROM docs WHERE dataset IN ({marks})"
    params: list = list(datasets)
    if exclude_eval:
        # By id_key (the id's 64-bit md5), an integer anti-join: a held-out id is always excluded.
        sql += f" AND id_key NOT IN (SELECT id_key FROM {EVAL_TABLE})"
    if len(datasets) > 1:
        order = " ".join(f"WHEN ? THEN {i}" for i in range(len(datasets)))
        sql += f" QUALIFY row_number() OVER (PARTITION BY id ORDER BY CASE dataset {order} END) = 1"
        params += list(datasets)
    return sql, params


def resolve_thresholds(
    con: duckdb.DuckDBPyConnection, pool: tuple[str, list], nodes: list[Selection | None]
) -> list[list[float | None]]:
    """Per selection, its percent rules as absolute thresholds over one pool (None if empty), in one scan.

    A rule's threshold is the pool's value at its quantile; ties at the threshold are all kept, so
    a top-7% rule may keep slightly more than 7%.
    """
    rules = [(i, p) for i, node in enumerate(nodes) for p in percent_predicates(node)]
    thresholds: list[list[float | None]] = [[] for _ in nodes]
    if not rules:
        return thresholds
    quantiles = [1 - p.value / 100 if p.op == "top_percent" else p.value / 100 for _, p in rules]
    aggregates = ", ".join(f"quantile_disc({column_expr(p.column)}, ?)" for _, p in rules)
    row = con.execute(f"SELECT {aggregates} FROM ({pool[0]})", [*quantiles, *pool[1]]).fetchall()[0]
    for (i, _), value in zip(rules, row):
        thresholds[i].append(float(value) if value is not None else None)
    return thresholds


def count_selected(
    con: duckdb.DuckDBPyConnection, pool: tuple[str, list], wheres: list[tuple[str, list]]
) -> list[tuple[int, int]]:
    """Documents and tokens each WHERE clause keeps from one pool, in one scan."""
    aggregates, params = [], []
    for sql, where_params in wheres:
        aggregates += [f"count(*) FILTER (WHERE {sql})", f"coalesce(sum(n_tokens) FILTER (WHERE {sql}), 0)"]
        params += [*where_params, *where_params]
    row = con.execute(f"SELECT {', '.join(aggregates)} FROM ({pool[0]})", [*params, *pool[1]]).fetchall()[0]
    return [(int(row[2 * i]), int(row[2 * i + 1])) for i in range(len(wheres))]


def order_sql(curriculum: CurriculumSpec) -> tuple[str, list]:
    """ORDER BY for a curriculum; ties (and the no-key case) break by a seeded hash of the id."""
    shuffle = "md5(CAST(? AS VARCHAR) || id)"
    if curriculum.key is None:
        return shuffle, [curriculum.seed]
    direction = "ASC" if curriculum.direction == "asc" else "DESC"
    return f"{column_expr(curriculum.key)} {direction} NULLS LAST, {shuffle}", [curriculum.seed]


def create_eval_table(con: duckdb.DuckDBPyConnection, datasets: list[str], split: EvalSplitSpec | None) -> None:
    """Temp table of held-out ids per domain: the first docs of each domain by a seeded id hash.

    The hash is the catalog's ``id_key`` (md5 of the id, computed once at sync) XOR a hash of the
    seed: uniform, stable across versions, and picked with a top-k aggregate rather than a sort
    of every document (the planner must stay fast on millions of documents).
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {EVAL_TABLE} (id VARCHAR, id_key UBIGINT, domain VARCHAR, rank BIGINT)")
    if split is None:
        return
    pool, params = pool_sql(datasets, exclude_eval=False)
    candidates = f"SELECT id, coalesce(domain, 'unknown') AS domain, id_key FROM ({pool})"
    sizes = con.execute(f"SELECT domain, count(*) FROM ({candidates}) GROUP BY domain", params).fetchall()
    keep = {domain: split.count or max(1, math.floor(n * (split.fraction or 0) + 0.5)) for domain, n in sizes}
    if not keep:
        return
    seed_key = int.from_bytes(hashlib.md5(f"eval:{split.seed}".encode()).digest()[:8], "little")
    picked = con.execute(
        f"SELECT domain, min_by(id, xor(id_key, CAST(? AS UBIGINT)), ?) FROM ({candidates}) GROUP BY domain",
        [seed_key, max(keep.values()), *params],
    ).fetchall()
    rows = [(doc_id, domain, rank) for domain, ids in picked for rank, doc_id in enumerate(ids[: keep[domain]], 1)]
    held_out = pa.table({"id": [r[0] for r in rows], "domain": [r[1] for r in rows], "rank": [r[2] for r in rows]})
    con.register("held_out_rows", held_out)
    con.execute(f"INSERT INTO {EVAL_TABLE} SELECT id, md5_number_lower(id), domain, rank FROM held_out_rows")
    con.unregister("held_out_rows")
