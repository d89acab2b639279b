"""The model registry: ``DATA/models/<sha256>.bin`` (fastText) or ``<sha256>/`` (stacked and
transformer directories), each with its card ``<sha256>.json``.

Models are named by content hash, so registering the same bytes twice is a no-op and a
curated dataset that records a model's sha256 always finds exactly that model. A reference may
also be an fsspec URL to a model file (``s3://bucket/lang.bin``): it is fetched once and
registered like a local file, so its identity is still the hash of its bytes.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path, PurePosixPath

from midmix import storage
from midmix.classifiers.card import ModelCard
from midmix.classifiers.loading import load_model, model_kind
from midmix.errors import MidmixError, NotFoundError
from midmix.publish import atomic_copy, atomic_write_text, publishing

_HEX = re.compile(r"[0-9a-f]{4,64}")
EXTERNAL_TASK = "external"
# A reference with one of these suffixes is a path to a fastText model file (.ftz: quantised).
MODEL_SUFFIXES = (".bin", ".ftz")


class ModelRegistry:
    """Store, list and resolve models of every kind under one ``models`` directory."""

    def __init__(self, models_dir: Path):
        self.models_dir = Path(models_dir)

    def add(self, model_path: Path, card: ModelCard) -> ModelCard:
        """Copy the model in under its content hash and write its card; both appear atomically."""
        model_path = Path(model_path)
        kind = model_kind(model_path)
        model = load_model(model_path)
        card = card.model_copy(update={"sha256": model.sha256, "labels": model.labels, "kind": kind})
        self.models_dir.mkdir(parents=True, exist_ok=True)
        final = self._stored(model.sha256, kind)
        if not final.exists():
            if kind == "fasttext":
                atomic_copy(model_path, final)
            else:
                with publishing(final) as staging:
                    shutil.copytree(model_path, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        atomic_write_text(self.models_dir / f"{model.sha256}.json", card.model_dump_json(indent=2))
        return card

    def cards(self) -> list[ModelCard]:
        """Every registered model's card, oldest first (a card without its model is skipped)."""
        if not self.models_dir.is_dir():
            return []
        cards = []
        for card_path in self.models_dir.glob("*.json"):
            card = _read_card(card_path)
            if self._stored(card.sha256, card.kind).exists():
                cards.append(card)
        return sorted(cards, key=lambda card: (card.created_at, card.sha256))

    def _stored(self, sha256: str, kind: str) -> Path:
        return self.models_dir / (f"{sha256}.bin" if kind == "fasttext" else sha256)

    def card(self, ref: str | Path) -> ModelCard:
        """Resolve ``ref``: a sha256 or unique prefix, a name (latest wins), or a path or URL to a .bin."""
        if storage.is_url(ref) and PurePosixPath(str(ref)).suffix in MODEL_SUFFIXES:
            return self._card_for_url(str(ref))
        local = Path(ref)
        if local.suffix in MODEL_SUFFIXES:
            if not local.is_file():
                raise NotFoundError(f"model file not found: {local}")
            return self._card_for_file(local)
        if local.is_dir():
            return self._card_for_file(local)
        ref = str(ref)
        cards = self.cards()
        by_name = [card for card in cards if card.name == ref]
        if by_name:
            return by_name[-1]
        if _HEX.fullmatch(ref):
            matches = [card for card in cards if card.sha256.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise MidmixError(f"model prefix {ref!r} matches {len(matches)} models; give more characters")
        known = sorted({card.name for card in cards})
        raise NotFoundError(
            f"no model {ref!r} in {self.models_dir}; known names: {', '.join(known) or 'none'} "
            "(or pass a sha256 prefix, a path to a fastText .bin or a model directory)"
        )

    def path(self, ref: str | Path) -> Path:
        """Path of the registered model file or directory for ``ref`` (see ``card``)."""
        card = self.card(ref)
        return self._stored(card.sha256, card.kind)

    def _card_for_file(self, path: Path, name: str | None = None) -> ModelCard:
        """Register a model file or directory given by path (a no-op when its content is registered)."""
        model = load_model(path)
        existing = self.models_dir / f"{model.sha256}.json"
        if existing.is_file():
            card = _read_card(existing)
            if self._stored(card.sha256, card.kind).exists():
                return card
        card = ModelCard(name=name or path.stem or path.name, task=EXTERNAL_TASK, sha256=model.sha256, labels=model.labels)
        return self.add(path, card)

    def _card_for_url(self, url: str) -> ModelCard:
        """Fetch the model at ``url`` under a private name, register it by hash, drop the download."""
        download = self.models_dir / f".fetch-{uuid.uuid4().hex}{PurePosixPath(url).suffix}"
        storage.fetch_file(url, download)
        try:
            return self._card_for_file(download, name=PurePosixPath(url).stem)
        finally:
            download.unlink(missing_ok=True)


def _read_card(path: Path) -> ModelCard:
    try:
        return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise MidmixError(f"corrupt model card {path}: {error}; delete it and re-register the model") from error
