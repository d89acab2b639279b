"""The mixture spec: phases of weighted components over curated datasets, validated once.

A spec says everything a mixture version contains; the planner checks it against catalog
statistics and the builder turns it into bytes. Weights are checked here (a pure property of
the spec); whether the data can supply them is the planner's job.

Weights and the reserved general share (documented choice):
- ``normalize_weights: false``: a phase's weights must sum to 1 (within 1e-6) and the weights of
  its ``general: true`` components must sum to ``reserved_general_ratio`` (within 1e-6).
- ``normalize_weights: true``: weights are relative; general components are scaled to share
  ``reserved_general_ratio`` and the others ``1 - reserved_general_ratio``. Published recipes
  whose rounded shares sum to 100.01% belong here.
- A weight may change over the phase (``{shape: linear, points: [[0, 0.7], [1, 0.3]]}``,
  ``midmix.mixture_schedule``): the rules above then hold at both ends of every segment between
  the phase's schedule points, and a component's share of the phase is the mean of its weight.

Long-context phases may also set ``length_buckets`` (token shares by document length, e.g. 75%
from documents of 16-32k tokens and 25% from 4-16k, as Qwen3 reports; each component is split
the same way) and ``rope_scaling`` (YaRN, ``midmix.rope``), which needs a ``seq_len`` longer than
the context it scales from.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from midmix.config_files import read_mapping_file, validate_model
from midmix.lr import LrSegment
from midmix.mixture_schedule import SUM_TOLERANCE, Segment, Weight, WeightSchedule, integral, phase_segments
from midmix.rope import RopeScaling
from midmix.pipelines.curation.schema import SIGNAL_COLUMNS
from midmix.pipelines.tokenizer import TokenizerSpec

WEIGHT_TOLERANCE = 1e-6
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

STRING_COLUMNS = ("source", "domain", "lang")
NUMERIC_COLUMNS = ("quality_score", "lang_score", "n_tokens", "n_chars", "dup_cluster_size", *SIGNAL_COLUMNS)
MAP_PREFIXES = ("quality.", "domain_scores.")


def check_numeric_column(column: str) -> str:
    """A numeric column name: a fixed column or ``quality.<classifier>`` / ``domain_scores.<label>``."""
    if column in NUMERIC_COLUMNS:
        return column
    for prefix in MAP_PREFIXES:
        if column.startswith(prefix) and len(column) > len(prefix):
            return column
    raise ValueError(
        f"unknown numeric column '{column}'; use one of {', '.join(NUMERIC_COLUMNS)}, "
        "quality.<classifier> or domain_scores.<label>"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Predicate(_Strict):
    """One test on a document: ``column op value``.

    ``top_percent`` / ``bottom_percent`` keep the best / worst ``value`` percent of the component's
    input documents by ``column``; the planner resolves them to an absolute threshold.
    """

    column: str
    op: Literal["==", "!=", ">=", ">", "<=", "<", "in", "not_in", "top_percent", "bottom_percent"]
    value: float | str | list[str]

    @model_validator(mode="after")
    def _column_fits_op(self) -> Predicate:
        if self.column in STRING_COLUMNS:
            if self.op in ("in", "not_in"):
                if not isinstance(self.value, list) or not self.value:
                    raise ValueError(f"'{self.column} {self.op}' needs a non-empty list of strings")
            elif self.op in ("==", "!="):
                if not isinstance(self.value, str):
                    raise ValueError(f"'{self.column} {self.op}' needs a string value")
            else:
                raise ValueError(f"'{self.column}' is a string column; use ==, !=, in or not_in")
            return self
        check_numeric_column(self.column)
        if self.op in ("in", "not_in") or not isinstance(self.value, (int, float)) or isinstance(self.value, bool):
            raise ValueError(f"'{self.column}' is numeric; use ==, !=, >=, >, <=, <, top_percent or bottom_percent with a number")
        if not math.isfinite(self.value):
            raise ValueError(f"'{self.column} {self.op}' needs a finite number")
        if self.op in ("top_percent", "bottom_percent") and not 0 < self.value <= 100:
            raise ValueError(f"'{self.column} {self.op}' needs a percentage in (0, 100]")
        return self


class AllOf(_Strict):
    """Every child holds (AND)."""

    all: list[Selection] = Field(min_length=1)


class AnyOf(_Strict):
    """At least one child holds (OR)."""

    any: list[Selection] = Field(min_length=1)


Selection = Predicate | AllOf | AnyOf
AllOf.model_rebuild()
AnyOf.model_rebuild()


class ComponentSpec(_Strict):
    """A weighted share of a phase: documents selected from one or more curated datasets."""

    name: str = Field(pattern=NAME_PATTERN)
    datasets: list[str] = Field(min_length=1, description='curated dataset versions, or "latest"')
    select: Selection | None = None
    weight: float | WeightSchedule = Field(description="share of the phase's tokens, or a schedule of it over the phase")
    max_epochs: float = Field(default=4.0, gt=0, description="upsampling cap: times a document may repeat")
    general: bool = Field(default=False, description="counts toward the phase's reserved general (replay) share")

    @field_validator("weight")
    @classmethod
    def _weight_is_a_share(cls, weight: Weight) -> Weight:
        if not isinstance(weight, WeightSchedule) and (not math.isfinite(weight) or weight < 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        return weight


class CurriculumSpec(_Strict):
    """Document order within each component: by a numeric column, or shuffled with ``seed``."""

    key: str | None = None
    direction: Literal["asc", "desc"] = "asc"
    seed: int = 0

    @field_validator("key")
    @classmethod
    def _key_is_numeric(cls, key: str | None) -> str | None:
        return None if key in (None, "none") else check_numeric_column(key)


class EvalSplitSpec(_Strict):
    """Held-out documents per domain (a fraction or a count), never in training shards.

    Mixture-wide (the manifest has one ``eval`` map keyed by domain): a fraction rounds half up and
    keeps at least one document per domain; which documents is decided by a seeded hash of the id.
    """

    fraction: float | None = Field(default=None, gt=0, lt=1)
    count: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_of_fraction_or_count(self) -> EvalSplitSpec:
        if (self.fraction is None) == (self.count is None):
            raise ValueError("eval needs exactly one of 'fraction' or 'count'")
        return self


class LengthBucket(_Strict):
    """A share of a long-context phase's tokens from documents of ``min_tokens <= n_tokens < max_tokens``."""

    min_tokens: int = Field(ge=0)
    max_tokens: int = Field(gt=0)
    weight: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _range_is_not_empty(self) -> LengthBucket:
        if self.max_tokens <= self.min_tokens:
            raise ValueError(f"length bucket max_tokens {self.max_tokens} must be above min_tokens {self.min_tokens}")
        return self


class PhaseSpec(_Strict):
    """One training phase: a token budget split over components, plus trainer hints."""

    name: str = Field(pattern=NAME_PATTERN)
    token_budget: int = Field(gt=0)
    components: list[ComponentSpec] = Field(min_length=1)
    reserved_general_ratio: float = Field(default=0.0, ge=0, lt=1)
    curriculum: CurriculumSpec = CurriculumSpec()
    seq_len: int = Field(default=512, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: RopeScaling | None = None
    length_buckets: list[LengthBucket] = Field(default_factory=list)
    lr: LrSegment = LrSegment()

    @model_validator(mode="after")
    def _unique_component_names(self) -> PhaseSpec:
        names = [component.name for component in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"phase '{self.name}': component names must be unique, got {names}")
        return self

    @model_validator(mode="after")
    def _buckets_are_shares_of_disjoint_ranges(self) -> PhaseSpec:
        buckets = sorted(self.length_buckets, key=lambda bucket: bucket.min_tokens)
        if not buckets:
            return self
        total = sum(bucket.weight for bucket in buckets)
        if abs(total - 1) > SUM_TOLERANCE:
            raise ValueError(f"phase '{self.name}': length_buckets weights sum to {total:.6g}, not 1")
        for low, high in zip(buckets, buckets[1:]):
            if high.min_tokens < low.max_tokens:
                raise ValueError(
                    f"phase '{self.name}': length_buckets [{low.min_tokens}, {low.max_tokens}) and "
                    f"[{high.min_tokens}, {high.max_tokens}) overlap"
                )
        return self


class MixtureSpec(_Strict):
    """A whole mixture: named, tokenized one way, phases in training order."""

    name: str = Field(pattern=NAME_PATTERN)
    tokenizer: TokenizerSpec = TokenizerSpec()
    normalize_weights: bool = False
    phases: list[PhaseSpec] = Field(min_length=1)
    eval: EvalSplitSpec | None = None

    @model_validator(mode="after")
    def _phases_are_consistent(self) -> MixtureSpec:
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        for phase in self.phases:
            effective_weights(phase, self.normalize_weights)
        for index, phase in enumerate(self.phases):
            original_seq_len(self.phases, index)
        return self

    def dataset_refs(self) -> list[str]:
        """Every dataset reference in the spec, in first-use order (may include "latest")."""
        refs: dict[str, None] = {}
        for phase in self.phases:
            for component in phase.components:
                refs.update(dict.fromkeys(component.datasets))
        return list(refs)


def effective_weights(phase: PhaseSpec, normalize: bool) -> list[float]:
    """Each component's share of the phase's tokens (the mean of its weight over the phase);
    raises ValueError on inconsistent weights."""
    return [integral(segments) for segments in weight_segments(phase, normalize)]


def weight_segments(phase: PhaseSpec, normalize: bool) -> list[list[Segment]]:
    """Each component's effective weight as segments over the phase (one segment when constant)."""
    raw = phase_segments([component.weight for component in phase.components])
    spans = [(segment.start, segment.end) for segment in raw[0]]
    scheduled = len(spans) > 1 or any(isinstance(c.weight, WeightSchedule) for c in phase.components)
    ends = []
    for number, (start, end) in enumerate(spans):
        at_start = f" at {start:.0%} of the phase" if scheduled else ""
        at_end = f" at {end:.0%} of the phase (just before it)" if scheduled else ""
        begins = _effective(phase, [segments[number].begin for segments in raw], normalize, at_start)
        finishes = _effective(phase, [segments[number].finish for segments in raw], normalize, at_end)
        ends.append((begins, finishes))
    return [
        [Segment(start, end, begins[c], finishes[c]) for (start, end), (begins, finishes) in zip(spans, ends)]
        for c in range(len(phase.components))
    ]


def _effective(phase: PhaseSpec, weights: list[float], normalize: bool, at: str) -> list[float]:
    """One point's weights made effective (checked, or normalised), per the module docstring."""
    general = [component.general for component in phase.components]
    ratio = phase.reserved_general_ratio
    general_sum = sum(w for w, g in zip(weights, general) if g)
    other_sum = sum(w for w, g in zip(weights, general) if not g)
    where = f"phase '{phase.name}'"
    if ratio > 0 and not any(general):
        raise ValueError(f"{where}: reserved_general_ratio is {ratio:g} but no component has general: true")
    if ratio == 0 and general_sum > 0:
        raise ValueError(f"{where}: components with general: true have weight{at} but reserved_general_ratio is 0")
    if not normalize:
        total = general_sum + other_sum
        if abs(total - 1) > WEIGHT_TOLERANCE:
            field = "components[].weight" if at else "them"
            raise ValueError(f"{where}: weights sum to {total:.6g}{at}, not 1; fix {field} or set normalize_weights: true")
        if abs(general_sum - ratio) > WEIGHT_TOLERANCE:
            raise ValueError(
                f"{where}: general components' weights sum to {general_sum:.6g}{at} but reserved_general_ratio is {ratio:g}"
            )
        return weights
    if other_sum <= 0 or (ratio > 0 and general_sum <= 0):
        raise ValueError(f"{where}: weights are all zero{at}; give at least one component a positive weight")
    return [w * (ratio / general_sum if g else (1 - ratio) / other_sum) for w, g in zip(weights, general)]


def original_seq_len(phases: list[PhaseSpec], index: int) -> int | None:
    """The context a phase's RoPE scaling extends (its own setting, else the previous phase's seq_len);
    raises ValueError when the phase does not extend it."""
    phase = phases[index]
    scaling = phase.rope_scaling
    if scaling is None:
        return None
    original = scaling.original_seq_len
    if original is None:
        if index == 0:
            raise ValueError(
                f"phase '{phase.name}': rope_scaling needs original_seq_len in the first phase (no phase before it)"
            )
        original = phases[index - 1].seq_len
    if phase.seq_len <= original:
        raise ValueError(
            f"phase '{phase.name}': rope_scaling.factor {scaling.factor:g} needs a seq_len longer than the context it "
            f"extends, but seq_len {phase.seq_len} is not above {original} (rope_scaling.original_seq_len, or the "
            "previous phase's seq_len); raise seq_len or remove rope_scaling"
        )
    return original


def parse_spec(data: object, source: str = "spec") -> MixtureSpec:
    """Validate a spec given as plain data; errors name the field and ``source``."""
    return validate_model(MixtureSpec, data, "mixture spec", f"in {source}")


def load_spec(path: str | Path) -> MixtureSpec:
    """Read a spec from a YAML or JSON file; unknown keys or wrong types raise MidmixError."""
    return parse_spec(read_mapping_file(path, "mixture spec"), str(path))


def slug(value: str) -> str:
    """A file-name-safe form of a label (domains become eval shard names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value) or "_"
