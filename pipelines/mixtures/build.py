"""Materialise a mixture spec into a published, immutable mixture version.

The version id is computed before building (content hash of the spec, resolved input dataset
versions, tokenizer hash and code version), so building an existing version is a no-op and the
same inputs give the same bytes: no timestamps in files, fixed Parquet writer options, every order
decided by data or seeded hashes. Shards hold exactly what is trained on: a component repeated
for 2.5 epochs has its documents twice in curriculum order, then a deterministic half epoch.

The catalog is read once up front (plan plus each component's selected rows) and closed before
the long part, so a build never holds the DuckDB file while it tokenizes and writes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import midmix
from midmix.errors import MidmixError
from midmix.hashing import version_id
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.plan import (
    EPOCH_TOLERANCE,
    ComponentPlan,
    MixturePlan,
    PhasePlan,
    plan_mixture,
)
from midmix.pipelines.mixtures.selection import EVAL_TABLE, order_sql, pool_sql, selection_sql
from midmix.pipelines.mixtures.shards import (
    TextReader,
    shard_table,
    take_rows,
    write_json,
    write_shards,
)
from midmix.pipelines.mixtures.spec import ComponentSpec, MixtureSpec, PhaseSpec, slug
from midmix.pipelines.tokenizer import Tokenizer
from midmix.progress import ProgressCallback
from midmix.publish import publishing, staging_path

BUILD_FORMAT = 1
"""Bump when the bytes a spec produces change, so old and new builds get different versions."""

_DOC_COLUMNS = ("dataset", "file", "row_index", "id", "source", "domain", "quality_score", "n_tokens")


@dataclass
class BuildInputs:
    """Everything a build needs from the catalog, read before any file is written."""

    plan: MixturePlan
    version: str
    components: dict[tuple[str, str], pa.Table]
    eval_rows: pa.Table | None
    models: dict[str, dict]


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
    with catalog.reading():
        plan = plan_mixture(spec, catalog)
        final = data_dir / "mixtures" / mixture_version(spec, catalog)
        if (final / "manifest.json").is_file():
            return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        inputs = _read_inputs(catalog, spec, plan, final.name)
    try:
        with publishing(final) as staging:
            manifest = write_version(spec, inputs, data_dir, staging, report)
    except BaseException:
        shutil.rmtree(staging_path(final), ignore_errors=True)
        raise
    catalog.sync()
    return manifest


def _read_inputs(catalog: Catalog, spec: MixtureSpec, plan: MixturePlan, version: str) -> BuildInputs:
    """Each component's selected catalog rows in curriculum order, the eval rows and model lineage.

    Runs inside the planner's connection: the eval id table it created is a temp table of that connection.
    """
    with catalog.reading() as con:
        exclude_eval = spec.eval is not None
        components = {
            (phase.name, component.name): _selected_rows(con, phase, component, component_plan, exclude_eval)
            for phase, phase_plan in zip(spec.phases, plan.phases)
            for component, component_plan in zip(phase.components, phase_plan.components)
        }
        eval_rows = _eval_rows(con, plan.datasets) if exclude_eval else None
        models = {v: catalog.dataset(v).get("models", {}) for v in plan.datasets}
    return BuildInputs(plan, version, components, eval_rows, models)


def write_version(spec: MixtureSpec, inputs: BuildInputs, data_dir: Path, staging: Path, report: ProgressCallback) -> dict:
    """Write every shard, spec.json, tokenizer.json and, last, manifest.json into ``staging``."""
    tokenizer = Tokenizer(spec.tokenizer)
    texts = TextReader(data_dir)
    plan = inputs.plan
    phases = [
        build_phase(phase, phase_plan, inputs, tokenizer, texts, staging, report)
        for phase, phase_plan in zip(spec.phases, plan.phases)
    ]
    eval_shards = build_eval(inputs, tokenizer, texts, staging, report)
    tokenizer_info = tokenizer.describe() | {"path": None}
    spec_data = spec.model_dump(mode="json")
    if spec.tokenizer.kind == "hf":
        shutil.copyfile(spec.tokenizer.path or "", staging / "tokenizer.json")
        tokenizer_info["path"] = spec_data["tokenizer"]["path"] = "tokenizer.json"
    write_json(staging / "spec.json", spec_data)
    manifest = {
        "kind": "mixture", "version": inputs.version, "name": spec.name, "code_version": midmix.__version__,
        "tokenizer": tokenizer_info, "datasets": plan.datasets, "phases": phases, "eval": eval_shards,
        "lineage": {"datasets": {v: {"models": inputs.models[v]} for v in plan.datasets}},
    }  # fmt: skip
    write_json(staging / "manifest.json", manifest)
    return manifest


def build_phase(
    phase: PhaseSpec,
    plan: PhasePlan,
    inputs: BuildInputs,
    tokenizer: Tokenizer,
    texts: TextReader,
    staging: Path,
    report: ProgressCallback,
) -> dict:
    """Write one phase's component shards; returns the phase's manifest entry."""
    components = [
        build_component(phase.name, component, component_plan, inputs, tokenizer, texts, staging, report)
        for component, component_plan in zip(phase.components, plan.components)
    ]
    return {
        "name": plan.name, "index": plan.index, "token_budget": plan.token_budget, "seq_len": plan.seq_len,
        "rope_theta": plan.rope_theta, "lr": plan.lr, "reserved_general_ratio": plan.reserved_general_ratio,
        "curriculum": plan.curriculum, "tokens": sum(c["realized_tokens"] for c in components),
        "docs": sum(c["docs"] for c in components), "components": components,
    }  # fmt: skip


def build_component(
    phase: str,
    component: ComponentSpec,
    plan: ComponentPlan,
    inputs: BuildInputs,
    tokenizer: Tokenizer,
    texts: TextReader,
    staging: Path,
    report: ProgressCallback,
) -> dict:
    """Tokenize and repeat one component's selected documents, then write its shards."""
    step = f"{phase}/{plan.name}"
    docs = inputs.components[(phase, plan.name)]
    report(step, 0, None)
    partial_order = np.argsort(docs.column("partial_key").to_numpy(zero_copy_only=False), kind="stable")
    if inputs.plan.tokens_exact:
        # The catalog's counts are this tokenizer's: plan the rows first, encode only the documents used.
        available = plan.available_tokens
        sequence = epoch_sequence(docs.column("n_tokens").to_numpy(), plan.requested_tokens, partial_order)
        used = np.unique(sequence)
        table = shard_table(take_rows(docs, used), tokenizer, texts)
        sequence = np.searchsorted(used, sequence)
    else:
        table = shard_table(docs, tokenizer, texts)
        n_tokens = table.column("n_tokens").to_numpy()
        available = int(n_tokens.sum())
        _check_epochs(phase, plan, available, component.max_epochs)
        sequence = epoch_sequence(n_tokens, plan.requested_tokens, partial_order)
    shards = write_shards(take_rows(table, sequence), staging, f"phases/{phase}/{plan.name}", step, report)
    realized = sum(s["tokens"] for s in shards)
    return {
        "name": plan.name, "weight": plan.weight, "target_tokens": plan.requested_tokens,
        "realized_tokens": realized, "docs": len(sequence), "unique_docs": len(np.unique(sequence)),
        "available_docs": docs.num_rows, "available_tokens": available,
        "epochs": round(realized / available, 6) if available else 0.0, "max_epochs": component.max_epochs,
        "general": plan.general, "datasets": plan.datasets, "selection": plan.selection,
        "thresholds": plan.thresholds, "shards": shards,
    }  # fmt: skip


def epoch_sequence(n_tokens: np.ndarray, target: int, partial_order: np.ndarray) -> np.ndarray:
    """Row indices to write: whole epochs in order, then the prefix of ``partial_order`` closest to ``target``.

    The partial epoch keeps curriculum order. Stopping at whichever document boundary is nearer (not the
    first one past the target) keeps every component within half a document of its budget, so realized
    shares stay close to the weights even when documents are long.
    """
    total = int(n_tokens.sum())
    if target <= 0 or total == 0:
        return np.zeros(0, dtype=np.int64)
    full, remainder = divmod(target, total)
    parts = [np.arange(len(n_tokens), dtype=np.int64)] * full
    if remainder:
        reached = np.cumsum(n_tokens[partial_order], dtype=np.int64)
        count = int(np.searchsorted(reached, remainder)) + 1
        below = int(reached[count - 2]) if count >= 2 else 0
        if remainder - below < int(reached[count - 1]) - remainder and (count >= 2 or full > 0):
            count -= 1
        parts.append(np.sort(partial_order[:count]).astype(np.int64))
    return np.concatenate(parts)


def build_eval(inputs: BuildInputs, tokenizer: Tokenizer, texts: TextReader, staging: Path, report: ProgressCallback) -> dict:
    """One eval shard per domain of the held-out documents (never in training shards)."""
    rows = inputs.eval_rows
    shards = {}
    for domain in inputs.plan.eval if rows is not None else {}:
        docs = rows.filter(pc.equal(rows.column("eval_domain"), domain))
        written = write_shards(shard_table(docs, tokenizer, texts), staging, f"eval/{slug(domain)}", f"eval/{domain}", report)
        shards[domain] = {key: written[0][key] for key in ("path", "sha256", "bytes", "rows", "tokens")}
    return shards


def _check_epochs(phase: str, plan: ComponentPlan, available: int, cap: float) -> None:
    """Recheck the repetition cap with counts from the mixture's own tokenizer."""
    if plan.requested_tokens > 0 and plan.requested_tokens > available * cap * (1 + EPOCH_TOLERANCE):
        raise MidmixError(
            f"phase '{phase}': component '{plan.name}' needs {plan.requested_tokens / max(available, 1):.2f} epochs "
            f"with the mixture's tokenizer, cap is {cap:g}; lower its weight or the token_budget, or raise max_epochs"
        )


def _selected_rows(
    con: duckdb.DuckDBPyConnection, phase: PhaseSpec, component: ComponentSpec, plan: ComponentPlan, exclude_eval: bool
) -> pa.Table:
    pool, pool_params = pool_sql(plan.datasets, exclude_eval)
    where, params = selection_sql(component.select, list(plan.thresholds.values()))
    order, order_params = order_sql(phase.curriculum)
    return con.sql(
        f"""SELECT {", ".join(_DOC_COLUMNS)}, md5('partial:' || CAST(? AS VARCHAR) || id) AS partial_key
            FROM ({pool}) WHERE {where} ORDER BY {order}""",
        params=[phase.curriculum.seed, *pool_params, *params, *order_params],
    ).to_arrow_table()


def _eval_rows(con: duckdb.DuckDBPyConnection, datasets: list[str]) -> pa.Table:
    pool, params = pool_sql(datasets, exclude_eval=False)
    return con.sql(
        f"""SELECT e.domain AS eval_domain, {", ".join(f"p.{c}" for c in _DOC_COLUMNS)}
            FROM {EVAL_TABLE} e JOIN ({pool}) p USING (id) ORDER BY e.domain, e.rank""",
        params=params,
    ).to_arrow_table()
