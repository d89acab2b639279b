"""Materialise a mixture spec into a published, immutable mixture version.

The version id is computed before building (content hash of the spec, resolved input dataset
versions, tokenizer hash and code version), so building an existing version is a no-op and the
same inputs give the same bytes: no timestamps in files, fixed Parquet writer options, every order
decided by data or seeded hashes. Shards hold exactly what is trained on: a component repeated
for 2.5 epochs has every document twice and a seeded half three times, keeping its curriculum
over all repeats (``sequence.py``).

The catalog is read once up front (plan plus each component's selected rows) and closed before
the long part, so a build never holds the DuckDB file while it tokenizes and writes. What the
selection decided goes to a work folder, and the tokenizing and writing run as parallel tasks on
a datatrove executor (``tasks.py``); the manifest skeleton is made here.
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
import pyarrow.parquet as pq

import midmix
from midmix.errors import MidmixError
from midmix.hashing import version_id
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.executors import ExecutorSpec, LocalExecutor, Stage, StageFailed, in_process, run_stages
from midmix.pipelines.mirror import pull_version
from midmix.pipelines.mixtures.plan import ComponentPlan, MixturePlan, PhasePlan, plan_mixture
from midmix.pipelines.mixtures.selection import EVAL_TABLE, order_sql, pool_sql, selection_sql
from midmix.pipelines.mixtures.sequence import part_sequence
from midmix.pipelines.mixtures.shards import write_json
from midmix.pipelines.mixtures.spec import ComponentSpec, MixtureSpec, PhaseSpec, slug
from midmix.pipelines.mixtures.tasks import (
    MAX_UNITS,
    MIN_UNIT_DOCS,
    BuildWork,
    EncodeUnits,
    PlanSequences,
    PublishMixture,
    WriteShards,
    save_array,
)
from midmix.pipelines.tokenizer import Tokenizer
from midmix.progress import ProgressCallback
from midmix.publish import STAGING_DIR, atomic_copy, atomic_path

BUILD_FORMAT = 2
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


def materialize_mixture(
    spec: MixtureSpec,
    data_dir: Path,
    progress: ProgressCallback | None = None,
    executor: ExecutorSpec | None = None,
    store: str | None = None,
) -> dict:
    """Plan, build and publish ``spec``; returns the manifest (the existing one if already built).

    The build runs as the stages of ``tasks.py`` on ``executor`` (default: one local task); any
    task count gives the same bytes. An interrupted build resumes from its work folder when run
    again; on Slurm this returns ``{"state": "submitted", ...}`` and the last job publishes.
    Dataset versions the spec names that are missing here are pulled from ``store`` first.
    """
    data_dir = Path(data_dir)
    executor = executor or LocalExecutor()
    if store:
        pull_missing_datasets(spec, data_dir, store)
    catalog = Catalog(data_dir)
    report = progress or (lambda step, done, total: None)
    with catalog.reading():
        plan = plan_mixture(spec, catalog)
        final = data_dir / "mixtures" / mixture_version(spec, catalog)
        if (final / "manifest.json").is_file():
            return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        work = BuildWork(data_dir / STAGING_DIR / f"build-{final.name}")
        if not work.info_path.is_file():
            report("select", 0, None)
            prepare_work(work, spec, _read_inputs(catalog, spec, plan, final.name), data_dir)
    try:
        done = run_stages(executor, build_stages(work, final, executor, report), work.logs(executor.tasks))
    except StageFailed:
        raise  # kept: a rerun resumes from the work folder
    except MidmixError:
        shutil.rmtree(work.root, ignore_errors=True)  # the data cannot supply the spec: nothing to resume
        raise
    if not done:
        return {"version": final.name, "kind": "mixture", "state": "submitted", "work_dir": str(work.root)}
    catalog.sync()
    shutil.rmtree(work.root, ignore_errors=True)
    report("publish", 1, 1)
    return json.loads((final / "manifest.json").read_text(encoding="utf-8"))


def pull_missing_datasets(spec: MixtureSpec, data_dir: Path, store: str) -> None:
    """Pull every dataset version the spec names (not ``latest``) that is not published locally."""
    for ref in spec.dataset_refs():
        if ref != "latest" and not (data_dir / "datasets" / ref / "manifest.json").is_file():
            pull_version(data_dir, "datasets", ref, store)


def build_stages(work: BuildWork, final: Path, executor: ExecutorSpec, report: ProgressCallback) -> list[Stage]:
    """The four stages; progress is reported only when tasks run in this process."""
    tasks = executor.tasks
    counts: dict[str, int] = {}

    def tick(step: str, total: int) -> None:
        counts[step] = counts.get(step, 0) + 1
        report(step, counts[step], total)

    ticking = tick if in_process(executor, tasks) else None
    return [
        Stage("1-encode", [EncodeUnits(str(work.root), ticking)], tasks),
        Stage("2-sequence", [PlanSequences(str(work.root))], 1),
        Stage("3-write", [WriteShards(str(work.root), ticking)], tasks),
        Stage("4-publish", [PublishMixture(str(work.root), str(final))], 1),
    ]


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


def prepare_work(work: BuildWork, spec: MixtureSpec, inputs: BuildInputs, data_dir: Path) -> None:
    """Write what the build tasks need: rows per part with their curriculum rank, encode units,
    the row sequences already known, spec and tokenizer copies, and, last, ``build.json``."""
    tokenizer = Tokenizer(spec.tokenizer)
    plan, parts, tables = inputs.plan, [], []
    for p_index, (phase, phase_plan) in enumerate(zip(spec.phases, plan.phases)):
        for c_index, (component, component_plan) in enumerate(zip(phase.components, phase_plan.components)):
            docs = inputs.components[(phase.name, component_plan.name)]
            partial_order = np.argsort(docs.column("partial_key").to_numpy(zero_copy_only=False), kind="stable")
            index = len(parts)
            part = {"eval": False, "phase": phase.name, "name": component_plan.name, "phase_index": p_index,
                    "component_index": c_index, "stem": f"phases/{phase.name}/{component_plan.name}",
                    "requested_tokens": component_plan.requested_tokens, "max_epochs": component.max_epochs,
                    "keyed": phase.curriculum.key is not None, "buckets": _bucket_targets(component_plan)}  # fmt: skip
            if plan.tokens_exact:
                # The catalog's counts are this tokenizer's: plan the rows first, encode only the documents used.
                sequence, stats = part_sequence(docs.column("n_tokens").to_numpy(), part, partial_order)
                used = np.unique(sequence)
                docs = docs.take(pa.array(used, pa.int64()))
                save_array(work.sequence(index), np.searchsorted(used, sequence))
                write_json(work.stats(index), stats)
            else:
                save_array(work.partial_order(index), partial_order)
            parts.append(part | {"docs": docs.num_rows})
            tables.append(_part_rows(docs, index))
    rows = inputs.eval_rows
    for domain in plan.eval if rows is not None else {}:
        docs = rows.filter(pc.equal(rows.column("eval_domain"), domain))
        index = len(parts)
        save_array(work.sequence(index), np.arange(docs.num_rows, dtype=np.int64))
        parts.append({"eval": True, "phase": "eval", "name": domain, "stem": f"eval/{slug(domain)}", "docs": docs.num_rows})
        tables.append(_part_rows(docs, index))
    table = pa.concat_tables(tables).sort_by([("dataset", "ascending"), ("file", "ascending"), ("row_index", "ascending"),
                                              ("part", "ascending"), ("rank", "ascending")])  # fmt: skip
    table, units = encode_units(table)
    with atomic_path(work.rows) as temporary:
        pq.write_table(table, temporary, row_group_size=1024, compression="zstd", compression_level=1)
    spec_data = spec.model_dump(mode="json")
    tokenizer_info = tokenizer.describe() | {"path": None}
    if spec.tokenizer.kind == "hf":
        atomic_copy(Path(spec.tokenizer.path or ""), work.root / "tokenizer.json")
        tokenizer_info["path"] = spec_data["tokenizer"]["path"] = "tokenizer.json"
    write_json(work.root / "spec.json", spec_data)
    manifest = {
        "kind": "mixture", "version": inputs.version, "name": spec.name, "code_version": midmix.__version__,
        "tokenizer": tokenizer_info, "datasets": plan.datasets, "eval": {},
        "phases": [_phase_entry(phase_plan, spec_phase) for phase_plan, spec_phase in zip(plan.phases, spec.phases)],
        "lineage": {"datasets": {v: {"models": inputs.models[v]} for v in plan.datasets}},
    }  # fmt: skip
    write_json(work.info_path, {"version": inputs.version, "data_dir": str(data_dir), "tokenizer": spec.tokenizer.model_dump(),
                                "parts": parts, "units": units, "manifest": manifest})  # fmt: skip


def _bucket_targets(plan: ComponentPlan) -> list[dict]:
    """A component's length buckets and their token targets (none when the phase has no buckets)."""
    return [{"min_tokens": b.min_tokens, "max_tokens": b.max_tokens, "target_tokens": b.requested_tokens}
            for b in plan.buckets or []]  # fmt: skip


def _part_rows(docs: pa.Table, part: int) -> pa.Table:
    """A part's documents as rows of ``rows.parquet``: its index and each document's curriculum rank."""
    return pa.table({
        "part": pa.array(np.full(docs.num_rows, part, dtype=np.int32)),
        "rank": pa.array(np.arange(docs.num_rows, dtype=np.int64)),
        **{name: docs.column(name) for name in ("dataset", "file", "row_index", "id", "source", "domain")},
        "quality_score": docs.column("quality_score").cast(pa.float32()),
    })  # fmt: skip


def encode_units(rows: pa.Table) -> tuple[pa.Table, list[dict]]:
    """Number the distinct documents in storage order (``doc``) and cut them into encode units.

    ``rows`` is sorted by (dataset, file, row_index); a unit is a run of documents, across file
    boundaries, and records which parts it holds (so shards read only the units holding theirs).
    """
    keys = [rows.column(name).to_numpy(zero_copy_only=False) for name in ("dataset", "file", "row_index")]
    new_doc = np.ones(rows.num_rows, dtype=bool)
    if rows.num_rows:
        new_doc[1:] = np.any([key[1:] != key[:-1] for key in keys], axis=0)
    doc = np.cumsum(new_doc) - 1
    docs = int(doc[-1]) + 1 if rows.num_rows else 0
    size = max(MIN_UNIT_DOCS, -(-docs // MAX_UNITS))
    part = rows.column("part").to_numpy()
    units = []
    for first in range(0, docs, size):
        last = min(first + size, docs) - 1
        inside = (doc >= first) & (doc <= last)
        units.append({"first_doc": first, "last_doc": last, "parts": sorted(int(p) for p in np.unique(part[inside]))})
    return rows.append_column("doc", pa.array(doc, pa.int64())), units


def _phase_entry(plan: PhasePlan, phase: PhaseSpec) -> dict:
    """A phase's manifest entry; realized figures are filled in when the shards exist."""
    entry = {
        "name": plan.name, "index": plan.index, "token_budget": plan.token_budget, "seq_len": plan.seq_len,
        "rope_theta": plan.rope_theta, "lr": plan.lr, "reserved_general_ratio": plan.reserved_general_ratio,
        "curriculum": plan.curriculum, "tokens": 0, "docs": 0,
        "components": [_component_entry(c, spec) for c, spec in zip(plan.components, phase.components)],
    }  # fmt: skip
    if plan.rope_scaling is not None:
        entry["rope_scaling"] = plan.rope_scaling
    if plan.length_buckets:  # realized tokens are filled in with the components'
        entry["length_buckets"] = [
            bucket | {"target_tokens": sum(c.buckets[number].requested_tokens for c in plan.components)}
            for number, bucket in enumerate(plan.length_buckets)
        ]
    return entry


def _component_entry(plan: ComponentPlan, component: ComponentSpec) -> dict:
    """A component's manifest entry; realized figures are filled in when the shards exist."""
    entry = {
        "name": plan.name, "weight": plan.weight, "target_tokens": plan.requested_tokens,
        "realized_tokens": 0, "docs": 0, "unique_docs": 0, "available_docs": plan.available_docs,
        "available_tokens": plan.available_tokens, "epochs": 0.0, "max_epochs": component.max_epochs,
        "general": plan.general, "datasets": plan.datasets, "selection": plan.selection,
        "thresholds": plan.thresholds, "shards": [],
    }  # fmt: skip
    if plan.schedule is not None:
        entry["schedule"] = plan.schedule
    return entry


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
