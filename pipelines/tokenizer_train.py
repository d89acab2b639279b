"""Train a byte-level BPE tokenizer (HF ``tokenizers``) on a curated dataset's text.

Byte-level so every string encodes without unknown tokens; ``<|endoftext|>`` is the one special
token, which ``midmix.pipelines.tokenizer.Tokenizer`` finds as ``eos_id``. The file is written
atomically (temporary name, then rename) so a killed run never leaves a half-written tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from midmix.errors import MidmixError
from midmix.publish import atomic_path

EOS_TOKEN = "<|endoftext|>"
MIN_VOCAB_SIZE = 257
TEXT_BATCH_ROWS = 1024


def dataset_texts(dataset_dir: Path, files: list[str]) -> Iterator[list[str]]:
    """Batches of document texts from a curated dataset's data files."""
    for file in files:
        for batch in pq.ParquetFile(dataset_dir / file).iter_batches(batch_size=TEXT_BATCH_ROWS, columns=["text"]):
            yield batch.column(0).to_pylist()


def train_tokenizer(texts: Iterator[list[str]], vocab_size: int, out: Path) -> dict:
    """Train byte-level BPE to ``vocab_size`` (incl. the byte alphabet and EOS) and save JSON to ``out``."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise MidmixError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 bytes + {EOS_TOKEN}), got {vocab_size}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    with atomic_path(out) as temporary:
        tokenizer.save(str(temporary))
    return {"path": str(out), "vocab_size": tokenizer.get_vocab_size(), "eos_id": tokenizer.token_to_id(EOS_TOKEN)}
