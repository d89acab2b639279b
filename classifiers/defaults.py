"""The bundled default models (quality, domain, language), trained from the sample corpus.

Only the corpus's train split is used (``is_heldout`` marks the rest), so curation and
benchmarks can score the held-out documents honestly. Training is skipped when models from
the same corpus bytes and the same params are already registered.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from classifiers.card import ModelCard
from classifiers.jsonl import read_jsonl
from classifiers.registry import ModelRegistry
from classifiers.split import DEFAULT_SPLIT, SplitRule, is_heldout
from classifiers.train import FastTextParams, LabelledDoc, file_trained_on, train_classifier

__all__ = ["BUNDLED_CORPUS", "DEFAULT_SPLIT", "DefaultModels", "DefaultRecipe", "ensure_default_models", "is_heldout"]

BUNDLED_CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample-corpus" / "corpus.jsonl.gz"


class DefaultRecipe(BaseModel):
    """How one default model is trained: its registry name, task, corpus field and params."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    label_field: str
    params: FastTextParams
    positive_label: str | None = None


RECIPES = {
    "quality": DefaultRecipe(
        name="fasttext_hq",
        task="quality",
        label_field="quality_hint",
        positive_label="high",
        params=FastTextParams(dim=16, epoch=5, minCount=2, bucket=100_000),
    ),
    "domain": DefaultRecipe(
        name="fasttext_domain",
        task="domain",
        label_field="domain",
        params=FastTextParams(dim=16, epoch=10, minCount=2, bucket=100_000),
    ),
    "lang": DefaultRecipe(
        name="fasttext_lang",
        task="lang",
        label_field="lang",
        params=FastTextParams(dim=16, epoch=10, wordNgrams=1, minn=2, maxn=4, minCount=2, bucket=100_000),
    ),
}


class DefaultModels(BaseModel):
    """The cards of the three default models."""

    quality: ModelCard
    domain: ModelCard
    lang: ModelCard


def ensure_default_models(models_dir: Path, corpus: Path = BUNDLED_CORPUS, split: SplitRule = DEFAULT_SPLIT) -> DefaultModels:
    """Train (or find already registered) the default quality, domain and language models."""
    registry = ModelRegistry(models_dir)
    trained_on = file_trained_on(Path(corpus))
    cards: dict[str, ModelCard] = {}
    records: list[dict] | None = None
    for key, recipe in RECIPES.items():
        params = {**recipe.params.model_dump(), "eval_fraction": split.eval_fraction}
        existing = [
            card
            for card in registry.cards()
            if card.name == recipe.name and card.trained_on == trained_on and card.params == params
        ]
        if existing:
            cards[key] = existing[-1]
            continue
        if records is None:
            records = [record for _, record in read_jsonl(Path(corpus))]
        examples = [
            LabelledDoc(record["text"], str(record[recipe.label_field]), str(record[split.key]))
            for record in records
            if record.get(recipe.label_field) is not None
        ]
        bin_path, card = train_classifier(
            examples,
            name=recipe.name,
            task=recipe.task,
            params=recipe.params,
            eval_fraction=split.eval_fraction,
            positive_label=recipe.positive_label,
            trained_on=trained_on,
        )
        cards[key] = registry.add(bin_path, card)
        bin_path.unlink()
    return DefaultModels(**cards)
