"""Request bodies of the HTTP API: what a client may ask for, and nothing about how the server runs it.

These are the service's own models, not the pipelines' configs: a curation request names the
corpus and the judgments (fields, tokenizer, heuristics, classifiers, dedup, decontamination),
never an executor, a virtualenv, sbatch arguments or a batch size; a mixture request names the
phases and the tokenizer. ``service.access`` turns them into the typed pipeline configs after
checking every location they name against the operator's settings. Unknown keys are refused (422).

The fields are listed one by one on purpose (they reuse the pipelines' sub-models): a knob added
to the pipelines' configs does not become something a client may set until it is added here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from midmix.pipelines.curation.config import (
    DecontamConfig,
    DedupConfig,
    DomainConfig,
    FieldMap,
    HeuristicsConfig,
    LanguageConfig,
    QualityConfig,
)
from midmix.pipelines.mixtures.spec import NAME_PATTERN, EvalSplitSpec, PhaseSpec
from midmix.pipelines.tokenizer import TokenizerSpec

Location = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurationRequest(_Strict):
    """Curate ``inputs`` (paths or URLs under the service's input roots) with these judgments."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["/data/inputs/crawl/*.jsonl.gz"], "quality": {"min_score": 0.5}}]},
    )

    inputs: list[Location] = Field(min_length=1, max_length=1000, description="files, folders or globs")
    fields: FieldMap = Field(default_factory=FieldMap)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    heuristics: HeuristicsConfig = Field(default_factory=HeuristicsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    domain: DomainConfig = Field(default_factory=DomainConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)


class MixtureRequest(_Strict):
    """A mixture to plan or build: named phases of weighted components over curated datasets."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "anneal-demo",
                    "phases": [
                        {"name": "stable", "token_budget": 2000000, "components": [
                            {"name": "web", "datasets": ["latest"], "weight": 1.0}]}
                    ],
                }
            ]
        },
    )  # fmt: skip

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    normalize_weights: bool = False
    phases: list[PhaseSpec] = Field(min_length=1, max_length=64)
    eval: EvalSplitSpec | None = None
