"""Fine-tune a small encoder from a local checkpoint into a sequence classifier, deterministically.

``fine_tune`` is what ``midmix classifiers train --kind transformer --base DIR`` runs: a plain
torch loop (AdamW, linear decay, fixed seed and data order) on the id-hash train split, then the
held-out metrics, then ``save_pretrained`` (safetensors) plus the tokenizer, so the result is a
directory any transformers user can load. ``init_encoder`` writes a fresh, untrained small BERT
with a WordPiece vocabulary learned from given text: a base checkpoint for machines that cannot
download one (tests and benchmarks build theirs this way).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from midmix.classifiers.card import ModelCard, TrainedOn
from midmix.classifiers.train import LabelledDoc, check_labels, default_positive, evaluate, split_examples
from midmix.errors import MidmixError


class TransformerParams(BaseModel):
    """Fine-tuning hyper-parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(3, ge=1)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    max_tokens: int = Field(256, ge=8)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0


def init_encoder(
    out_dir: Path, texts: Sequence[str], *, vocab_size: int = 2000, layers: int = 2, hidden: int = 64,
    heads: int = 2, max_tokens: int = 512,
) -> Path:
    """Write an untrained BERT encoder and a WordPiece tokenizer learned from ``texts`` into ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from midmix.classifiers.transformer import import_transformers

    transformers = import_transformers()
    BertConfig, BertModel, PreTrainedTokenizerFast = (
        transformers.BertConfig, transformers.BertModel, transformers.PreTrainedTokenizerFast
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_tokens,
    )
    fast.save_pretrained(out_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=max_tokens, pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    BertModel(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def fine_tune(
    examples: Sequence[LabelledDoc],
    *,
    base: Path,
    out_dir: Path,
    name: str,
    task: str,
    params: TransformerParams = TransformerParams(),
    eval_fraction: float = 0.2,
    positive_label: str | None = None,
    trained_on: TrainedOn | None = None,
) -> tuple[Path, ModelCard]:
    """Fine-tune ``base`` on the train split into ``out_dir``; return it with its card (held-out metrics)."""
    import torch

    from midmix.classifiers.loading import directory_digest, load_model
    from midmix.classifiers.transformer import TOKENIZER_FILES, import_transformers

    transformers = import_transformers()
    AutoModelForSequenceClassification, AutoTokenizer = (
        transformers.AutoModelForSequenceClassification, transformers.AutoTokenizer
    )

    base = Path(base)
    if not (base / "config.json").is_file():
        raise MidmixError(f"{base / 'config.json'} is missing: --base must be a local transformers checkpoint directory")
    if not any((base / file).is_file() for file in TOKENIZER_FILES):
        raise MidmixError(f"{base}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer into --base")
    train, held_out = split_examples(examples, eval_fraction)
    labels = check_labels(train, name, positive_label)
    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
            ignore_mismatched_sizes=True, local_files_only=True,
        )
    except (OSError, ValueError) as error:
        raise MidmixError(f"cannot load the base checkpoint {base}: {error}") from error
    _train_loop(model, tokenizer, train, labels, params)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    positive = positive_label or default_positive(labels)
    metrics = evaluate(load_model(out_dir), held_out, positive_label=positive) if held_out else None
    card = ModelCard(
        name=name, task=task, kind="transformer", sha256=directory_digest(out_dir), labels=labels,
        positive_label=positive, train_docs=len(train), eval_docs=len(held_out),
        metrics=metrics.model_dump() if metrics else {},
        params={**params.model_dump(), "eval_fraction": eval_fraction, "base": str(base)}, trained_on=trained_on,
    )
    return out_dir, card


def _train_loop(model, tokenizer, train: Sequence[LabelledDoc], labels: list[str], params: TransformerParams) -> None:
    """AdamW with linear decay over a seeded shuffle of the train split, on CPU for exact repeatability."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps = params.epochs * ((len(train) + params.batch_size - 1) // params.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / steps))
    order = list(range(len(train)))
    shuffler = random.Random(params.seed)
    target = {label: index for index, label in enumerate(labels)}
    for _ in range(params.epochs):
        shuffler.shuffle(order)
        for start in range(0, len(order), params.batch_size):
            batch = [train[index] for index in order[start : start + params.batch_size]]
            encoded = tokenizer(
                [doc.text for doc in batch], truncation=True, max_length=params.max_tokens, padding=True,
                return_tensors="pt",
            )
            loss = model(**encoded, labels=torch.tensor([target[doc.label] for doc in batch])).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    model.eval()
