"""The planner: a pure function of a spec and catalog statistics, checked before any byte is written.

For each phase and component it resolves dataset references and percentile thresholds, counts
the documents and tokens the selection leaves, and derives the repetition (epochs) the token
budget needs. A component whose weight follows a schedule needs the mean of its weight times the
budget; in a phase with length buckets each component's tokens are split over the buckets by
their weights, and each bucket of each component is counted and checked on its own (a bucket no
selected document fits is an error). Token counts are the curated datasets' ``n_tokens``; they are exact when the
datasets were counted with the mixture's tokenizer (``tokens_exact``), and the builder recounts
with the real encoding otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
from pydantic import BaseModel

from midmix.errors import MidmixError
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.selection import (
    EVAL_TABLE,
    count_selected,
    create_eval_table,
    iter_predicates,
    percent_predicates,
    pool_sql,
    resolve_thresholds,
    selection_sql,
    threshold_names,
)
from midmix.pipelines.mixtures.spec import (
    ComponentSpec,
    LengthBucket,
    MixtureSpec,
    PhaseSpec,
    effective_weights,
    original_seq_len,
    weight_segments,
)
from midmix.pipelines.tokenizer import Tokenizer

EPOCH_TOLERANCE = 1e-9


class BucketPlan(BaseModel):
    """One length bucket of one component: what it can supply and what the budget asks of it."""

    min_tokens: int
    max_tokens: int
    weight: float
    available_docs: int
    available_tokens: int
    requested_tokens: int
    epochs: float


class ComponentPlan(BaseModel):
    """What one component can supply and what the budget asks of it."""

    name: str
    weight: float
    general: bool
    datasets: list[str]
    selection: dict | None
    thresholds: dict[str, float | None]
    available_docs: int
    available_tokens: int
    requested_tokens: int
    epochs: float
    max_epochs: float
    feasible: bool
    problem: str | None = None
    schedule: list[dict] | None = None
    buckets: list[BucketPlan] | None = None


class PhasePlan(BaseModel):
    """One phase: its budget, trainer hints and component plans."""

    name: str
    index: int
    token_budget: int
    seq_len: int
    rope_theta: float
    rope_scaling: dict | None = None
    length_buckets: list[dict] | None = None
    lr: dict
    reserved_general_ratio: float
    general_tokens: int
    curriculum: dict
    components: list[ComponentPlan]


class EvalPlan(BaseModel):
    """Held-out documents of one domain."""

    docs: int
    tokens: int


class MixturePlan(BaseModel):
    """The whole plan; ``model_dump()`` is what the service returns."""

    name: str
    tokenizer: dict
    tokens_exact: bool
    datasets: list[str]
    eval: dict[str, EvalPlan]
    phases: list[PhasePlan]
    feasible: bool
    problems: list[str]


def plan_mixture(spec: MixtureSpec, catalog: Catalog, strict: bool = True) -> MixturePlan:
    """Plan every phase; with ``strict`` an infeasible plan raises MidmixError naming what to change."""
    tokenizer = Tokenizer(spec.tokenizer)
    with catalog.reading() as con:
        resolved = {ref: catalog.resolve_dataset(ref) for ref in spec.dataset_refs()}
        versions = list(dict.fromkeys(resolved.values()))
        _check_columns(spec, catalog, resolved)
        create_eval_table(con, versions, spec.eval)
        stats = measure_components(con, spec, resolved, spec.eval is not None)
        phases = [
            plan_phase(phase, index, stats, spec.normalize_weights, original_seq_len(spec.phases, index))
            for index, phase in enumerate(spec.phases)
        ]
        eval_plan = _plan_eval(con, versions) if spec.eval is not None else {}
        exact = all(catalog.dataset(v).get("tokenizer", {}).get("sha256") == tokenizer.sha256 for v in versions)
    problems = [c.problem for p in phases for c in p.components if c.problem]
    if strict and problems:
        raise MidmixError("; ".join(problems))
    return MixturePlan(
        name=spec.name, tokenizer=tokenizer.describe(), tokens_exact=exact, datasets=versions,
        eval=eval_plan, phases=phases, feasible=not problems, problems=problems,
    )  # fmt: skip


@dataclass(frozen=True)
class ComponentStats:
    """What the catalog says one component's selection leaves (and, in a bucketed phase, per bucket)."""

    datasets: list[str]
    thresholds: list[float | None]
    docs: int
    tokens: int
    buckets: list[tuple[int, int]] | None = None


def measure_components(
    con: duckdb.DuckDBPyConnection, spec: MixtureSpec, resolved: dict[str, str], exclude_eval: bool
) -> dict[tuple[str, str], ComponentStats]:
    """Thresholds, docs and tokens per (phase, component): two scans per distinct list of datasets."""
    groups: dict[tuple[str, ...], list[tuple[str, ComponentSpec]]] = {}
    for phase in spec.phases:
        for component in phase.components:
            datasets = tuple(dict.fromkeys(resolved[ref] for ref in component.datasets))
            groups.setdefault(datasets, []).append((phase.name, component))
    buckets = {phase.name: phase.length_buckets for phase in spec.phases}
    stats = {}
    for datasets, members in groups.items():
        pool = pool_sql(list(datasets), exclude_eval)
        thresholds = resolve_thresholds(con, pool, [component.select for _, component in members])
        wheres = [selection_sql(component.select, values) for (_, component), values in zip(members, thresholds)]
        # One more count per length bucket of a bucketed phase's component, in the same scan.
        extra = [(i, bucket_sql(wheres[i], bucket)) for i, (phase, _) in enumerate(members) for bucket in buckets[phase]]
        counts = count_selected(con, pool, wheres + [where for _, where in extra])
        for i, ((phase, component), values) in enumerate(zip(members, thresholds)):
            per_bucket = [count for (owner, _), count in zip(extra, counts[len(wheres):]) if owner == i]
            stats[(phase, component.name)] = ComponentStats(list(datasets), values, *counts[i], per_bucket or None)
    return stats


def bucket_sql(where: tuple[str, list], bucket: LengthBucket) -> tuple[str, list]:
    """A selection's WHERE narrowed to one length bucket."""
    sql, params = where
    return f"({sql}) AND n_tokens >= ? AND n_tokens < ?", [*params, bucket.min_tokens, bucket.max_tokens]


def plan_phase(
    phase: PhaseSpec,
    index: int,
    stats: dict[tuple[str, str], ComponentStats],
    normalize: bool,
    original_seq_len: int | None = None,
) -> PhasePlan:
    """Plan one phase: each component's target is its effective share (its mean weight) times the token budget."""
    weights = effective_weights(phase, normalize)
    segments = weight_segments(phase, normalize)
    scheduled = any(len(s) > 1 or s[0].begin != s[0].finish for s in segments)
    targets = allocate_tokens(phase.token_budget, weights)
    components = [
        plan_component(phase, component, weight, target, stats[(phase.name, component.name)],
                       [s.to_json() for s in schedule] if scheduled else None)
        for component, weight, target, schedule in zip(phase.components, weights, targets, segments)
    ]  # fmt: skip
    scaling = phase.rope_scaling
    return PhasePlan(
        name=phase.name, index=index, token_budget=phase.token_budget, seq_len=phase.seq_len,
        rope_theta=phase.rope_theta, lr=phase.lr.model_dump(), reserved_general_ratio=phase.reserved_general_ratio,
        rope_scaling=scaling.model_dump() | {"original_seq_len": original_seq_len} if scaling else None,
        length_buckets=[bucket.model_dump() for bucket in phase.length_buckets] or None,
        general_tokens=sum(c.requested_tokens for c in components if c.general),
        curriculum=phase.curriculum.model_dump(), components=components,
    )  # fmt: skip


def plan_component(
    phase: PhaseSpec,
    component: ComponentSpec,
    weight: float,
    requested: int,
    stats: ComponentStats,
    schedule: list[dict] | None = None,
) -> ComponentPlan:
    """Available docs and tokens after selection, requested tokens, epochs and feasibility."""
    buckets = _plan_buckets(phase.length_buckets, requested, stats.buckets) if stats.buckets else None
    docs = stats.docs if buckets is None else sum(bucket.available_docs for bucket in buckets)
    tokens = stats.tokens if buckets is None else sum(bucket.available_tokens for bucket in buckets)
    epochs = requested / tokens if tokens else (0.0 if requested == 0 else math.inf)
    if buckets:
        epochs = max(bucket.epochs if bucket.epochs >= 0 else math.inf for bucket in buckets)
    problem = _bucket_problem(phase, component, buckets or []) or _component_problem(
        phase.name, component, docs, requested, epochs
    )
    return ComponentPlan(
        name=component.name, weight=weight, general=component.general, datasets=stats.datasets,
        selection=component.select.model_dump() if component.select else None,
        thresholds=dict(zip(threshold_names(percent_predicates(component.select)), stats.thresholds)),
        available_docs=docs, available_tokens=tokens, requested_tokens=requested,
        epochs=epochs if math.isfinite(epochs) else -1.0, max_epochs=component.max_epochs,
        feasible=problem is None, problem=problem, schedule=schedule, buckets=buckets,
    )  # fmt: skip


def _plan_buckets(buckets: list[LengthBucket], requested: int, counts: list[tuple[int, int]]) -> list[BucketPlan]:
    """A component's request split over the phase's length buckets by their weights."""
    targets = allocate_tokens(requested, [bucket.weight for bucket in buckets])
    plans = []
    for bucket, target, (docs, tokens) in zip(buckets, targets, counts):
        epochs = target / tokens if tokens else (0.0 if target == 0 else -1.0)
        plans.append(BucketPlan(
            min_tokens=bucket.min_tokens, max_tokens=bucket.max_tokens, weight=bucket.weight,
            available_docs=docs, available_tokens=tokens, requested_tokens=target, epochs=epochs,
        ))  # fmt: skip
    return plans


def _bucket_problem(phase: PhaseSpec, component: ComponentSpec, buckets: list[BucketPlan]) -> str | None:
    for number, bucket in enumerate(buckets):
        where = (
            f"phase '{phase.name}': length_buckets[{number}] ({bucket.min_tokens}-{bucket.max_tokens} tokens), "
            f"component '{component.name}'"
        )
        if bucket.requested_tokens > 0 and bucket.available_docs == 0:
            return f"{where}: no selected document is that long; change the bucket's range or weight, or widen the selection"
        if bucket.epochs > component.max_epochs + EPOCH_TOLERANCE:
            return (
                f"{where} needs {bucket.epochs:.2f} epochs, cap is {component.max_epochs:g}; "
                "lower the bucket's weight or the phase's token_budget, widen the selection, or raise max_epochs"
            )
    return None


def allocate_tokens(budget: int, weights: list[float]) -> list[int]:
    """Integer token targets that sum exactly to ``budget`` (largest remainder; ties to the first)."""
    total = sum(weights)
    exact = [budget * w / total for w in weights]
    targets = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - targets[i]), i))
    for i in by_remainder[: budget - sum(targets)]:
        targets[i] += 1
    return targets


def _component_problem(phase: str, component: ComponentSpec, docs: int, requested: int, epochs: float) -> str | None:
    where = f"phase '{phase}': component '{component.name}'"
    if docs == 0 and requested > 0:
        return f"{where} selects no documents; loosen its selection or check its datasets"
    if epochs > component.max_epochs + EPOCH_TOLERANCE:
        return (
            f"{where} needs {epochs:.2f} epochs, cap is {component.max_epochs:g}; "
            "lower its weight or the phase's token_budget, widen its selection, or raise max_epochs"
        )
    return None


def _plan_eval(con: duckdb.DuckDBPyConnection, versions: list[str]) -> dict[str, EvalPlan]:
    pool, params = pool_sql(versions, exclude_eval=False)
    rows = con.execute(
        f"""SELECT e.domain, count(*), coalesce(sum(p.n_tokens), 0)
            FROM {EVAL_TABLE} e JOIN ({pool}) p USING (id) GROUP BY e.domain ORDER BY e.domain""",
        params,
    ).fetchall()
    return {domain: EvalPlan(docs=docs, tokens=tokens) for domain, docs, tokens in rows}


def _check_columns(spec: MixtureSpec, catalog: Catalog, resolved: dict[str, str]) -> None:
    """Quality classifiers named in selections or curricula must exist in every input dataset."""
    names = {d["version"]: set(d["quality_names"]) for d in catalog.datasets()}
    for phase in spec.phases:
        for component in phase.components:
            columns = [phase.curriculum.key or ""] + [p.column for p in iter_predicates(component.select)]
            for column in (c for c in columns if c.startswith("quality.")):
                for version in (resolved[ref] for ref in component.datasets):
                    if column.removeprefix("quality.") not in names[version]:
                        known = ", ".join(f"quality.{n}" for n in sorted(names[version])) or "none"
                        raise MidmixError(
                            f"phase '{phase.name}': component '{component.name}': dataset {version} has no "
                            f"quality score '{column}'; known: {known}"
                        )
