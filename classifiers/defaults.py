"""The bundled default models (quality, domain, language), trained from the sample corpus.

Only the corpus's train split is used (``is_heldout`` marks the rest), so curation and
benchmarks can score the held-out documents honestly. Training is skipped when models from
the same corpus bytes and the same params are already registered.

Domain and quality are stacked models (fastText + structural signals, ``classifiers.stacked``):
the domain tags then hold on sources the corpus does not have, and the quality score is a
probability learned on out-of-source scores, so it spreads over [0, 1] instead of piling up
at 0.99. Language ID stays a plain fastText model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from midmix.classifiers.card import ModelCard, TrainedOn
from midmix.classifiers.jsonl import read_jsonl
from midmix.classifiers.registry import ModelRegistry
from midmix.classifiers.split import DEFAULT_SPLIT, SplitRule, is_heldout
from midmix.classifiers.stacked import StackedParams, stacked_card_params, train_stacked_classifier
from midmix.classifiers.train import FastTextParams, LabelledDoc, file_trained_on, train_classifier
from midmix.hashing import text_id
from midmix.progress import ProgressCallback
from midmix.resources import SAMPLE_CORPUS

__all__ = ["BUNDLED_CORPUS", "DEFAULT_SPLIT", "DefaultModels", "DefaultRecipe", "ensure_default_models", "is_heldout"]

BUNDLED_CORPUS = SAMPLE_CORPUS


class DefaultRecipe(BaseModel):
    """How one default model is trained: its registry name, task, corpus field and params.

    With ``stacked`` set, the model is a stacked model whose fastText part uses ``params``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    label_field: str
    params: FastTextParams
    positive_label: str | None = None
    max_chars: int = 4000
    chunk_words: int | None = None
    stacked: StackedParams | None = None

    def card_params(self, split: SplitRule) -> dict[str, Any]:
        """The card ``params`` a model trained by this recipe carries (see ``train_classifier``)."""
        if self.stacked is not None:
            return stacked_card_params(self.stacked, split.eval_fraction)
        return {
            **self.params.model_dump(),
            "eval_fraction": split.eval_fraction,
            "train_max_chars": self.max_chars,
            "train_chunk_words": self.chunk_words,
        }


# Tuned on the train split for held-out quality and a total training time of seconds on one
# core: bench/bench_classifiers.py reports the figures (bench/RESULTS.md, "Classifiers").
_QUALITY_FASTTEXT = FastTextParams(lr=0.5, epoch=5, dim=16, wordNgrams=2, minCount=2, bucket=50_000)
_DOMAIN_FASTTEXT = FastTextParams(lr=1.0, epoch=5, dim=16, wordNgrams=1, minCount=2, bucket=0)
RECIPES = {
    "quality": DefaultRecipe(
        name="fasttext_hq",
        task="quality",
        label_field="quality_hint",
        positive_label="high",
        params=_QUALITY_FASTTEXT,
        max_chars=1500,
        stacked=StackedParams(fasttext=_QUALITY_FASTTEXT),
    ),
    "domain": DefaultRecipe(
        name="domain_stacked",
        task="domain",
        label_field="domain",
        params=_DOMAIN_FASTTEXT,
        max_chars=1500,
        stacked=StackedParams(fasttext=_DOMAIN_FASTTEXT),
    ),
    # Language ID: character 1-3-grams over 20-word lines, so short and unseen text still works.
    "lang": DefaultRecipe(
        name="fasttext_lang",
        task="lang",
        label_field="lang",
        params=FastTextParams(lr=0.5, epoch=15, dim=16, wordNgrams=1, minn=1, maxn=3, minCount=1, bucket=50_000),
        max_chars=1000,
        chunk_words=20,
    ),
}


class DefaultModels(BaseModel):
    """The cards of the three default models."""

    quality: ModelCard
    domain: ModelCard
    lang: ModelCard


def ensure_default_models(
    models_dir: Path,
    corpus: Path = BUNDLED_CORPUS,
    split: SplitRule = DEFAULT_SPLIT,
    progress: ProgressCallback | None = None,
) -> DefaultModels:
    """Train (or find already registered) the default quality, domain and language models.

    ``progress`` is called with (model name, models done, models total) after each model.
    """
    registry = ModelRegistry(models_dir)
    trained_on = file_trained_on(Path(corpus))
    cards: dict[str, ModelCard] = {}
    records: list[dict[str, Any]] = []
    for key, recipe in RECIPES.items():
        card = _registered_default(registry, recipe, split, trained_on)
        if card is None:
            records = records or [record for _, record in read_jsonl(Path(corpus))]
            card = _train_default(registry, recipe, records, split, trained_on)
        cards[key] = card
        if progress:
            progress(recipe.name, len(cards), len(RECIPES))
    return DefaultModels(**cards)


def _registered_default(
    registry: ModelRegistry, recipe: DefaultRecipe, split: SplitRule, trained_on: TrainedOn
) -> ModelCard | None:
    params = recipe.card_params(split)
    matches = [
        card
        for card in registry.cards()
        if card.name == recipe.name and card.trained_on == trained_on and card.params == params
        and card.kind == ("stacked" if recipe.stacked else "fasttext")
    ]
    return matches[-1] if matches else None


def _train_default(
    registry: ModelRegistry,
    recipe: DefaultRecipe,
    records: list[dict[str, Any]],
    split: SplitRule,
    trained_on: TrainedOn,
) -> ModelCard:
    examples = [
        LabelledDoc(
            record["text"],
            str(record[recipe.label_field]),
            str(record.get(split.key) or text_id(record["text"])),
            str(record.get("source") or ""),
        )
        for record in records
        if record.get(recipe.label_field) is not None
    ]
    with tempfile.TemporaryDirectory(prefix="midmix-defaults-") as work:
        if recipe.stacked is not None:
            model_dir, card = train_stacked_classifier(
                examples,
                name=recipe.name,
                task=recipe.task,
                params=recipe.stacked,
                eval_fraction=split.eval_fraction,
                positive_label=recipe.positive_label,
                trained_on=trained_on,
                out_dir=Path(work) / recipe.name,
            )
            return registry.add(model_dir, card)
        bin_path, card = train_classifier(
            examples,
            name=recipe.name,
            task=recipe.task,
            params=recipe.params,
            eval_fraction=split.eval_fraction,
            positive_label=recipe.positive_label,
            trained_on=trained_on,
            out_path=Path(work) / f"{recipe.name}.bin",
            max_chars=recipe.max_chars,
            chunk_words=recipe.chunk_words,
        )
        return registry.add(bin_path, card)
