"""Materialise a mixture spec into a published, immutable mixture version.

The version id is computed before building (content hash of the spec, resolved input dataset
versions, tokenizer hash and code version), so building an existing version is a no-op and the
same inputs give the same bytes: no timestamps in files, fixed Parquet writer options, every order
decided by data or seeded hashes. Shards hold exactly what is trained on: a component repeated
for 2.5 epochs has its documents twice in curriculum order, then a deterministic half epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import midmix
from midmix.errors import MidmixError
from midmix.hashing import sha256_file, version_id
from midmix.publish import publishing, staging_path
from pipelines.catalog import Catalog
from pipelines.mixture.encode import encode_arrow
from pipelines.mixture.plan import EPOCH_TOLERANCE, ComponentPlan, MixturePlan, PhasePlan, plan_mixture
from pipelines.mixture.selection import EVAL_TABLE, order_sql, pool_sql, selection_sql
from pipelines.mixture.spec import MixtureSpec, PhaseSpec, slug
from pipelines.schema import SHARD_ROW_GROUP_ROWS, SHARD_SCHEMA
from pipelines.tokenizer import Tokenizer

ProgressCallback = Callable[[str, int, int | None], None]

BUILD_FORMAT = 1
"""Bump when the bytes a spec produces change, so old and new builds get different versions."""

SHARD_MAX_ROWS = 32 * SHARD_ROW_GROUP_ROWS
PARQUET_OPTIONS = {
    "row_group_size": SHARD_ROW_GROUP_ROWS,
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["doc_id", "source", "domain"],
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
}
TEST_SLOW_ENV = "MIDMIX_TEST_SLOW_BUILD"
"""Test-only: seconds to sleep after each shard, so a crash test can kill a build mid-way."""

_DOC_COLUMNS = "dataset, file, row_index, id, source, domain, quality_score, n_tokens"


def mixture_version(spec: MixtureSpec, catalog: Catalog) -> str:
    """The version id a build of ``spec`` over the catalog's current datasets will publish."""
    tokenizer = Tokenizer(spec.tokenizer)
    resolved = {ref: catalog.resolve_dataset(ref) for ref in spec.dataset_refs()}
    spec_data = spec.model_dump(mode="json")
    spec_data["tokenizer"] = {"kind": spec.tokenizer.kind, "sha256": tokenizer.sha256}
    return version_id(
        "mix",
        {"spec": spec_data, "datasets": resolved, "tokenizer": tokenizer.sha256,
         "code_version": midmix.__version__, "format": BUILD_FORMAT},
    )  # fmt: skip


def materialize_mixture(spec: MixtureSpec, data_dir: Path, progress: ProgressCallback | None = None) -> dict:
    """Plan, build and publish ``spec``; returns the manifest (the existing one if already built)."""
    data_dir = Path(data_dir)
    catalog = Catalog(data_dir)
    report = progress or (lambda step, done, total: None)
    with catalog.reading() as con:
        plan = plan_mixture(spec, catalog)
        final = data_dir / "mixtures" / mixture_version(spec, catalog)
        if (final / "manifest.json").is_file():
            return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        try:
            with publishing(final) as staging:
                manifest = _build(con, spec, plan, final.name, data_dir, staging, report)
        except BaseException:
            shutil.rmtree(staging_path(final), ignore_errors=True)
            raise
    catalog.sync()
    return manifest


def _build(
    con: duckdb.DuckDBPyConnection,
    spec: MixtureSpec,
    plan: MixturePlan,
    version: str,
    data_dir: Path,
    staging: Path,
    report: ProgressCallback,
) -> dict:
    tokenizer = Tokenizer(spec.tokenizer)
    texts = TextReader(data_dir)
    phases = [
        build_phase(con, phase_spec, phase_plan, tokenizer, texts, staging, report, plan.tokens_exact)
        for phase_spec, phase_plan in zip(spec.phases, plan.phases)
    ]
    eval_shards = build_eval(con, plan, tokenizer, texts, staging, report) if spec.eval else {}
    tokenizer_info = tokenizer.describe() | {"path": None}
    spec_data = spec.model_dump(mode="json")
    if spec.tokenizer.kind == "hf":
        shutil.copyfile(spec.tokenizer.path or "", staging / "tokenizer.json")
        tokenizer_info["path"] = spec_data["tokenizer"]["path"] = "tokenizer.json"
    _write_json(staging / "spec.json", spec_data)
    manifest = {
        "kind": "mixture", "version": version, "name": spec.name, "code_version": midmix.__version__,
        "tokenizer": tokenizer_info, "datasets": plan.datasets, "phases": phases, "eval": eval_shards,
        "lineage": {"datasets": {v: {"models": texts.manifest(v).get("models", {})} for v in plan.datasets}},
    }  # fmt: skip
    _write_json(staging / "manifest.json", manifest)
    return manifest


def build_phase(
    con: duckdb.DuckDBPyConnection,
    phase: PhaseSpec,
    plan: PhasePlan,
    tokenizer: Tokenizer,
    texts: "TextReader",
    staging: Path,
    report: ProgressCallback,
    exact_counts: bool,
) -> dict:
    """Write one phase's component shards; returns the phase's manifest entry."""
    components = [
        build_component(con, phase, plan, component, tokenizer, texts, staging, report, exact_counts)
        for component in plan.components
    ]
    return {
        "name": plan.name, "index": plan.index, "token_budget": plan.token_budget, "seq_len": plan.seq_len,
        "rope_theta": plan.rope_theta, "lr": plan.lr, "reserved_general_ratio": plan.reserved_general_ratio,
        "curriculum": plan.curriculum, "tokens": sum(c["realized_tokens"] for c in components),
        "docs": sum(c["docs"] for c in components), "components": components,
    }  # fmt: skip


def build_component(
    con: duckdb.DuckDBPyConnection,
    phase: PhaseSpec,
    phase_plan: PhasePlan,
    plan: ComponentPlan,
    tokenizer: Tokenizer,
    texts: "TextReader",
    staging: Path,
    report: ProgressCallback,
    exact_counts: bool,
) -> dict:
    """Select, tokenize and repeat one component's documents, then write its shards."""
    step = f"{phase.name}/{plan.name}"
    component = next(c for c in phase.components if c.name == plan.name)
    docs = _selected_docs(con, phase, plan, component.select)
    report(step, 0, None)
    partial_order = np.argsort(docs.column("partial_key").to_numpy(zero_copy_only=False), kind="stable")
    if exact_counts:
        # The catalog's counts are this tokenizer's: plan the rows first, encode only the documents used.
        available = int(plan.available_tokens)
        sequence = epoch_sequence(docs.column("n_tokens").to_numpy(), plan.requested_tokens, partial_order)
        used = np.unique(sequence)
        table = _shard_table(take_rows(docs, used), tokenizer, texts)
        sequence = np.searchsorted(used, sequence)
    else:
        table = _shard_table(docs, tokenizer, texts)
        n_tokens = table.column("n_tokens").to_numpy()
        available = int(n_tokens.sum())
        _check_epochs(phase.name, plan, available, component.max_epochs)
        sequence = epoch_sequence(n_tokens, plan.requested_tokens, partial_order)
    shards = write_shards(take_rows(table, sequence), staging, f"phases/{phase.name}/{plan.name}", step, report)
    realized = sum(s["tokens"] for s in shards)
    return {
        "name": plan.name, "weight": plan.weight, "target_tokens": plan.requested_tokens,
        "realized_tokens": realized, "docs": len(sequence), "unique_docs": int(len(np.unique(sequence))),
        "available_docs": docs.num_rows, "available_tokens": available,
        "epochs": round(realized / available, 6) if available else 0.0, "max_epochs": component.max_epochs,
        "general": plan.general, "datasets": plan.datasets, "selection": plan.selection,
        "thresholds": plan.thresholds, "shards": shards,
    }  # fmt: skip


def take_rows(table: pa.Table, indices: np.ndarray) -> pa.Table:
    """``table.take(indices)``, skipping the copy when the indices are every row in order (one epoch)."""
    if len(indices) == table.num_rows and np.array_equal(indices, np.arange(table.num_rows)):
        return table
    return table.take(pa.array(indices, pa.int64()))


def _check_epochs(phase: str, plan: ComponentPlan, available: int, cap: float) -> None:
    """Recheck the repetition cap with counts from the mixture's own tokenizer."""
    if plan.requested_tokens > 0 and plan.requested_tokens > available * cap * (1 + EPOCH_TOLERANCE):
        raise MidmixError(
            f"phase '{phase}': component '{plan.name}' needs {plan.requested_tokens / max(available, 1):.2f} epochs "
            f"with the mixture's tokenizer, cap is {cap:g}; lower its weight or the token_budget, or raise max_epochs"
        )


def epoch_sequence(n_tokens: np.ndarray, target: int, partial_order: np.ndarray) -> np.ndarray:
    """Row indices to write: whole epochs in order, then the fewest docs of ``partial_order`` reaching ``target``.

    The partial epoch keeps curriculum order; the result overshoots ``target`` by less than one document.
    """
    total = int(n_tokens.sum())
    if target <= 0 or total == 0:
        return np.zeros(0, dtype=np.int64)
    full, remainder = divmod(target, total)
    parts = [np.arange(len(n_tokens), dtype=np.int64)] * full
    if remainder:
        reached = np.cumsum(n_tokens[partial_order], dtype=np.int64)
        count = int(np.searchsorted(reached, remainder)) + 1
        parts.append(np.sort(partial_order[:count]).astype(np.int64))
    return np.concatenate(parts)


def _selected_docs(con: duckdb.DuckDBPyConnection, phase: PhaseSpec, plan: ComponentPlan, select) -> pa.Table:
    pool, pool_params = pool_sql(plan.datasets, exclude_eval=_has_eval(con))
    thresholds = [plan.thresholds[name] for name in plan.thresholds]
    where, params = selection_sql(select, thresholds)
    order, order_params = order_sql(phase.curriculum)
    return con.sql(
        f"""SELECT {_DOC_COLUMNS}, md5('partial:' || CAST(? AS VARCHAR) || id) AS partial_key
            FROM ({pool}) WHERE {where} ORDER BY {order}""",
        params=[phase.curriculum.seed, *pool_params, *params, *order_params],
    ).to_arrow_table()


def _has_eval(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute(f"SELECT count(*) FROM {EVAL_TABLE}").fetchall()[0][0] > 0


def _shard_table(docs: pa.Table, tokenizer: Tokenizer, texts: "TextReader") -> pa.Table:
    input_ids = encode_arrow(tokenizer, texts.take(docs))
    return pa.Table.from_arrays(
        [
            input_ids,
            docs.column("id").cast(pa.string()),
            docs.column("source").cast(pa.string()),
            docs.column("domain").cast(pa.string()),
            docs.column("quality_score").cast(pa.float32()),
            pc.list_value_length(input_ids).cast(pa.int32()),
        ],
        schema=SHARD_SCHEMA,
    )


def write_shards(table: pa.Table, staging: Path, stem: str, step: str, report: ProgressCallback) -> list[dict]:
    """Write ``table`` as ``<stem>-NNNNN.parquet`` shards of at most SHARD_MAX_ROWS rows."""
    shards = []
    for index, begin in enumerate(range(0, max(table.num_rows, 1), SHARD_MAX_ROWS)):
        if table.num_rows == 0:
            break
        part = table.slice(begin, SHARD_MAX_ROWS)
        relative = f"{stem}-{index:05d}.parquet"
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, **PARQUET_OPTIONS)
        shards.append({
            "path": relative, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "rows": part.num_rows, "tokens": int(pc.sum(part.column("n_tokens")).as_py() or 0),
        })  # fmt: skip
        report(step, begin + part.num_rows, table.num_rows)
        _test_pause()
    return shards


def build_eval(
    con: duckdb.DuckDBPyConnection,
    plan: MixturePlan,
    tokenizer: Tokenizer,
    texts: "TextReader",
    staging: Path,
    report: ProgressCallback,
) -> dict:
    """One eval shard per domain of the held-out documents (never in training shards)."""
    pool, params = pool_sql(plan.datasets, exclude_eval=False)
    rows = con.sql(
        f"""SELECT e.domain AS eval_domain, {", ".join(f"p.{c.strip()}" for c in _DOC_COLUMNS.split(","))}
            FROM {EVAL_TABLE} e JOIN ({pool}) p USING (id) ORDER BY e.domain, e.rank""",
        params=params,
    ).to_arrow_table()
    shards = {}
    for domain in plan.eval:
        docs = rows.filter(pc.equal(rows.column("eval_domain"), domain))
        written = write_shards(_shard_table(docs, tokenizer, texts), staging, f"eval/{slug(domain)}", f"eval/{domain}", report)
        shards[domain] = {key: written[0][key] for key in ("path", "sha256", "bytes", "rows", "tokens")}
    return shards


class TextReader:
    """Document texts by (dataset, file, row), each file's text column read once per build."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._columns: dict[tuple[str, str], pa.ChunkedArray] = {}
        self._manifests: dict[str, dict] = {}

    def manifest(self, dataset: str) -> dict:
        """A dataset's manifest, read once."""
        if dataset not in self._manifests:
            path = self.data_dir / "datasets" / dataset / "manifest.json"
            self._manifests[dataset] = json.loads(path.read_text(encoding="utf-8"))
        return self._manifests[dataset]

    def take(self, docs: pa.Table) -> pa.Array:
        """The texts of ``docs`` (columns dataset, file, row_index), in their row order."""
        if docs.num_rows == 0:
            return pa.array([], pa.string())
        keys = pc.binary_join_element_wise(docs.column("dataset"), docs.column("file"), "\x00").to_numpy(zero_copy_only=False)
        rows = docs.column("row_index").to_numpy()
        positions, parts = [], []
        for key in sorted(set(keys)):
            mask = keys == key
            dataset, file = key.split("\x00")
            parts.append(self._column(dataset, file).take(pa.array(rows[mask])))
            positions.append(np.flatnonzero(mask))
        merged = pa.chunked_array([chunk for part in parts for chunk in part.chunks], pa.string())
        return merged.take(pa.array(np.argsort(np.concatenate(positions), kind="stable"))).combine_chunks()

    def _column(self, dataset: str, file: str) -> pa.ChunkedArray:
        if (dataset, file) not in self._columns:
            table = pq.read_table(self.data_dir / "datasets" / dataset / file, columns=["text"])
            self._columns[(dataset, file)] = table.column("text")
        return self._columns[(dataset, file)]


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _test_pause() -> None:
    seconds = float(os.environ.get(TEST_SLOW_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)
