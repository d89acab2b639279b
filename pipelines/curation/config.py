"""Curation configuration: one validated pydantic model says everything a curation run does.

Models are referenced by name, sha256, local ``.bin`` path or model directory (a stacked model or
a Hugging Face transformers classifier); ``"default"`` means the bundled model of that task
(trained on the sample corpus by ``midmix.classifiers.defaults``). The executor is a
config choice, so moving from local processes to Ray or Slurm needs no code change.

A config file (YAML or JSON) lists only what differs from the defaults, for example::

    inputs: ["corpus/*.jsonl.gz", "s3://bucket/extra.parquet"]
    executor: {kind: local, tasks: 4}
    quality: {classifiers: {fasttext_hq: default, edu: /models/fineweb-edu-classifier}, min_score: 0.3}
    heuristics: {by_domain: {code: {min_words: 3, max_duplicate_line_ratio: 0.7}}}
    dedup: {num_bands: 20, rows_per_band: 5, jaccard_threshold: 0.8}
    decontam: {eval_files: [evals/humaneval.jsonl.gz, {path: evals/gsm8k.jsonl, fields: [question, answer]}]}
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from midmix.config_files import read_mapping_file, validate_model
from midmix.pipelines.curation.languages import (
    ISO_639_1,
    NO_LANGUAGE,
    UNSPACED_WORDS_PER_ENGLISH_WORD,
    default_language_rules,
    script_of_words,
    unknown_language_message,
)
from midmix.pipelines.executors import LocalExecutor, RayExecutor, SlurmExecutor
from midmix.pipelines.tokenizer import TokenizerSpec
from midmix.resources import HUMANEVAL

DEFAULT_MODEL = "default"
DEFAULT_DOMAINS = ("web", "code", "math", "qa", "academic", "other")
BUNDLED_EVAL = HUMANEVAL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldMap(_Strict):
    """Which input fields hold the text, id, source and meta (missing ones fall back)."""

    text: str = "text"
    id: str = "id"
    source: str = "source"
    meta: str = "meta"


class HeuristicThresholds(_Strict):
    """Gopher/C4/FineWeb-style limits on the ``sig_*`` signals; ``None`` switches a check off."""

    min_words: int | None = 20
    max_words: int | None = 200_000
    min_mean_word_length: float | None = 2.0
    max_mean_word_length: float | None = 12.0
    max_symbol_ratio: float | None = 0.1
    min_alpha_word_ratio: float | None = 0.6
    min_stopword_ratio: float | None = Field(0.02, description="applied where the language has a stopword list")
    max_bullet_line_ratio: float | None = 0.9
    max_ellipsis_line_ratio: float | None = 0.3
    min_ellipsis_lines: int = Field(
        2, ge=1, description="the ellipsis rule needs this many lines ending in one: a single one is style, not truncation"
    )
    max_duplicate_line_ratio: float | None = 0.3
    max_top_2gram_ratio: float | None = 0.2
    max_non_ascii_ratio: float | None = None


def _structured_thresholds() -> dict[str, HeuristicThresholds]:
    """Code and math break prose rules (symbols, short tokens, repeated lines), so they get their own."""
    lenient = HeuristicThresholds(
        min_words=5,
        min_mean_word_length=1.0,
        max_mean_word_length=20.0,
        max_symbol_ratio=None,
        min_alpha_word_ratio=None,
        min_stopword_ratio=None,
        max_bullet_line_ratio=None,
        max_ellipsis_line_ratio=None,
        max_duplicate_line_ratio=0.6,
        max_top_2gram_ratio=0.5,
    )
    return {"code": lenient, "math": lenient.model_copy()}


class LanguageRules(_Strict):
    """How one language's text maps onto the English-calibrated thresholds (see ``languages.py``).

    Word counts are divided by ``words_per_english_word`` and word-length limits multiplied by
    ``word_length`` before comparing, so the thresholds keep their English meaning.
    """

    words_per_english_word: float = Field(1.0, gt=0.0, description="segmented units per English word")
    word_length: float | None = Field(
        1.0, gt=0.0, description="mean word length relative to English; null: no-space script, length rules off"
    )
    stopwords: list[str] | None = Field(None, description="frequent function words; null: stopword rule off")

    @field_validator("stopwords")
    @classmethod
    def _stopwords_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any(word.strip() for word in value):
            raise ValueError("give at least one stopword, or null to switch the stopword rule off")
        return value

    @property
    def stopword_script(self) -> int:
        """The script the stopword list is written in; the rule applies to documents in it only."""
        return script_of_words(self.stopwords or [])


SPACED_RULES = LanguageRules()
UNSPACED_RULES = LanguageRules(words_per_english_word=UNSPACED_WORDS_PER_ENGLISH_WORD, word_length=None)


def _builtin_language_rules() -> dict[str, LanguageRules]:
    return {code: LanguageRules(**rules) for code, rules in default_language_rules().items()}


class HeuristicsConfig(_Strict):
    """Thresholds per domain (``by_domain``, ``default`` for every other domain) and rules per language.

    ``by_language`` entries replace the built-in rules of their language; other languages keep theirs.
    """

    enabled: bool = True
    default: HeuristicThresholds = Field(default_factory=HeuristicThresholds)
    by_domain: dict[str, HeuristicThresholds] = Field(default_factory=_structured_thresholds)
    by_language: dict[str, LanguageRules] = Field(default_factory=_builtin_language_rules)

    @field_validator("by_language")
    @classmethod
    def _known_languages_over_builtins(cls, value: dict[str, LanguageRules]) -> dict[str, LanguageRules]:
        for code in value:
            if code not in ISO_639_1 and code != NO_LANGUAGE:
                raise ValueError(unknown_language_message(code))
        return {**_builtin_language_rules(), **value}

    def for_domain(self, domain: str) -> HeuristicThresholds:
        """The thresholds that apply to documents tagged ``domain``."""
        return self.by_domain.get(domain, self.default)

    def for_language(self, lang: str | None, unspaced: bool) -> LanguageRules:
        """Rules for a document tagged ``lang``; ``unspaced``: its text is mostly in a no-space script.

        The script wins over the tag: no-space text keeps no word-length rule even when the
        language-ID model names a spaced language.
        """
        rules = self.by_language.get(lang or "")
        if unspaced and (rules is None or rules.word_length is not None):
            return UNSPACED_RULES
        return rules or SPACED_RULES


class QualityConfig(_Strict):
    """Quality classifiers by name; the stored score is each one's positive-label score (a
    regression model's raw output)."""

    classifiers: dict[str, str] = Field(default_factory=lambda: {"fasttext_hq": DEFAULT_MODEL})
    primary: str = "fasttext_hq"
    max_chars: int = Field(1500, ge=1, description="document prefix the classifiers see (as in their training)")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="drop below this primary score")

    @model_validator(mode="after")
    def _primary_is_listed(self) -> QualityConfig:
        if not self.classifiers:
            raise ValueError("quality.classifiers needs at least one classifier")
        if self.primary not in self.classifiers:
            raise ValueError(f"quality.primary '{self.primary}' is not one of {sorted(self.classifiers)}")
        return self


class DomainConfig(_Strict):
    model: str = DEFAULT_MODEL
    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_DOMAINS), min_length=1)
    max_chars: int = Field(1500, ge=1, description="document prefix the model sees (as in its training)")


class LanguageConfig(_Strict):
    model: str = DEFAULT_MODEL
    keep: list[str] | None = Field(None, description="keep only these ISO 639-1 codes; None keeps all")
    max_chars: int = Field(500, ge=1, description="document prefix the model sees (language shows in a few lines)")


class DedupConfig(_Strict):
    """Exact dedup on normalised text plus MinHash LSH; candidates are verified by exact Jaccard."""

    exact: bool = True
    minhash: bool = True
    ngram: int = Field(5, ge=1)
    num_bands: int = Field(20, ge=1)
    rows_per_band: int = Field(5, ge=1)
    jaccard_threshold: float = Field(0.8, gt=0.0, le=1.0)


class EvalSet(_Strict):
    """One eval set: a file and the fields of each item to look for (each field on its own)."""

    path: str
    name: str | None = Field(None, description="drop reason decontam:<name>; default: the file's stem")
    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)


class DecontamConfig(_Strict):
    """Drop documents holding a run of an eval item's word n-grams (``decontam.py`` says how)."""

    enabled: bool = True
    eval_files: list[EvalSet] = Field(
        default_factory=lambda: [EvalSet(path=str(BUNDLED_EVAL))],
        description="eval sets; a plain path means the item text is in field 'text'",
    )
    ngram: int = Field(6, ge=1)
    min_run_ngrams: int = Field(12, ge=1, description="a run of this many of an item's n-grams contaminates")
    overlap_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="for short items: a run holding this share of the item's n-grams"
    )
    max_gap: int | None = Field(None, ge=1, description="n-gram positions a run may skip; default 3 x ngram")
    max_items_per_ngram: int = Field(10, ge=1, description="n-grams in more items are template and count for none")

    @field_validator("eval_files", mode="before")
    @classmethod
    def _paths_are_text_sets(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"path": item} if isinstance(item, str) else item for item in value]
        return value

    @property
    def run_gap(self) -> int:
        """Largest distance between consecutive matches of one run (one edited word breaks ``ngram``)."""
        return self.max_gap or 3 * self.ngram


class CurationConfig(_Strict):
    """Everything a curation run does; the version id hashes it (minus inputs and executor)."""

    inputs: list[str] = Field(min_length=1)
    fields: FieldMap = Field(default_factory=FieldMap)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    executor: LocalExecutor | RayExecutor | SlurmExecutor = Field(default_factory=LocalExecutor, discriminator="kind")
    batch_size: int = Field(256, ge=1)
    heuristics: HeuristicsConfig = Field(default_factory=HeuristicsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    domain: DomainConfig = Field(default_factory=DomainConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)


def parse_config(data: object, origin: str = "") -> CurationConfig:
    """Validate a raw mapping (from a file or an HTTP body) into a ``CurationConfig``."""
    return validate_model(CurationConfig, data, "curation config", origin)


def load_config(path: str | Path) -> CurationConfig:
    """Read a YAML or JSON config file; bad syntax, unknown keys or wrong types name the field and file."""
    return parse_config(read_mapping_file(path, "config file"), f"in {path}")
