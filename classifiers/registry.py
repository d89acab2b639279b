"""The model registry: ``DATA/models/<sha256>.bin`` with its card ``<sha256>.json``.

Models are named by content hash, so registering the same bytes twice is a no-op and a
curated dataset that records a model's sha256 always finds exactly that model. A reference may
also be an fsspec URL to a model file (``s3://bucket/lang.bin``): it is fetched once and
registered like a local file, so its identity is still the hash of its bytes.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path, PurePosixPath

from midmix import storage
from midmix.classifiers.card import ModelCard
from midmix.classifiers.model import FastTextModel
from midmix.errors import MidmixError, NotFoundError
from midmix.publish import atomic_copy, atomic_write_text

_HEX = re.compile(r"[0-9a-f]{4,64}")
EXTERNAL_TASK = "external"
# A reference with one of these suffixes is a path to a fastText model file (.ftz: quantised).
MODEL_SUFFIXES = (".bin", ".ftz")


class ModelRegistry:
    """Store, list and resolve fastText models under one ``models`` directory."""

    def __init__(self, models_dir: Path):
        self.models_dir = Path(models_dir)

    def add(self, bin_path: Path, card: ModelCard) -> ModelCard:
        """Copy the model in as ``<sha256>.bin`` and write its card; both appear atomically."""
        model = FastTextModel.load(bin_path)
        card = card.model_copy(update={"sha256": model.sha256, "labels": model.labels})
        self.models_dir.mkdir(parents=True, exist_ok=True)
        final_bin = self.models_dir / f"{model.sha256}.bin"
        if not final_bin.exists():
            atomic_copy(Path(bin_path), final_bin)
        atomic_write_text(self.models_dir / f"{model.sha256}.json", card.model_dump_json(indent=2))
        return card

    def cards(self) -> list[ModelCard]:
        """Every registered model's card, oldest first (a card without its .bin is skipped)."""
        if not self.models_dir.is_dir():
            return []
        cards = []
        for card_path in self.models_dir.glob("*.json"):
            if (card_path.with_suffix(".bin")).is_file():
                cards.append(_read_card(card_path))
        return sorted(cards, key=lambda card: (card.created_at, card.sha256))

    def card(self, ref: str | Path) -> ModelCard:
        """Resolve ``ref``: a sha256 or unique prefix, a name (latest wins), or a path or URL to a .bin."""
        if storage.is_url(ref) and PurePosixPath(str(ref)).suffix in MODEL_SUFFIXES:
            return self._card_for_url(str(ref))
        local = Path(ref)
        if local.suffix in MODEL_SUFFIXES:
            if not local.is_file():
                raise NotFoundError(f"model file not found: {local}")
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
            "(or pass a sha256 prefix or a path to a fastText .bin)"
        )

    def path(self, ref: str | Path) -> Path:
        """Path of the registered ``.bin`` for ``ref`` (see ``card``)."""
        return self.models_dir / f"{self.card(ref).sha256}.bin"

    def _card_for_file(self, path: Path, name: str | None = None) -> ModelCard:
        model = FastTextModel.load(path)
        existing = self.models_dir / f"{model.sha256}.json"
        if existing.is_file() and existing.with_suffix(".bin").is_file():
            return _read_card(existing)
        card = ModelCard(name=name or path.stem, task=EXTERNAL_TASK, sha256=model.sha256, labels=model.labels)
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
