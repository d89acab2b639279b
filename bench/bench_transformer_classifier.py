"""Throughput of a bring-your-own transformer classifier on CPU, ours vs a plain Hugging Face pipeline.

Model: a BERT encoder built here (``init_encoder``: WordPiece vocabulary learned from the sample
corpus, random weights; throughput does not depend on the weights) with a 6-label
sequence-classification head, saved with ``save_pretrained``. Both sides score the same documents
(the sample corpus's first N, raw text truncated to ``--max-tokens`` tokens) on the same threads:

- ours: ``TransformerClassifier.predict_scores`` (documents sorted by length so each batch pads
  little, ``torch.inference_mode``, float32 on CPU);
- peer: ``transformers.pipeline("text-classification", top_k=None, batch_size=B, truncation=True)``
  over the documents in their given order.

Run: python bench/bench_transformer_classifier.py [--docs 512] [--batch-sizes 32 64 128 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midmix.classifiers.jsonl import read_jsonl  # noqa: E402
from midmix.classifiers.transformer import TransformerClassifier, import_transformers  # noqa: E402
from midmix.classifiers.transformer_train import init_encoder  # noqa: E402
from midmix.resources import SAMPLE_CORPUS  # noqa: E402

LABELS = ["academic", "code", "math", "other", "qa", "web"]


def build_model(work: Path, texts: list[str], layers: int, hidden: int, max_tokens: int) -> Path:
    transformers = import_transformers()
    base = init_encoder(work / "base", texts, vocab_size=8000, layers=layers, hidden=hidden, heads=4,
                        max_tokens=max_tokens)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
        local_files_only=True,
    )
    out = work / "classifier"
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((base / name).read_bytes())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    import torch

    texts = [record["text"] for _, record in read_jsonl(SAMPLE_CORPUS)][: args.docs]
    transformers = import_transformers()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(texts)} docs, "
          f"BERT {args.layers} layers x {args.hidden}, max {args.max_tokens} tokens")
    with tempfile.TemporaryDirectory(prefix="midmix-bench-transformer-") as tmp:
        path = build_model(Path(tmp), texts, args.layers, args.hidden, args.max_tokens)
        print(f"{'batch':>5} {'ours docs/s':>12} {'peer docs/s':>12} {'ours/peer':>9} "
              f"{'ours docs/CPU-s':>16} {'peer docs/CPU-s':>16}  max |score diff|")
        for batch_size in args.batch_sizes:
            ours = TransformerClassifier(path, "bench", device="cpu", batch_size=batch_size)
            ours.max_tokens = args.max_tokens
            start, start_cpu = time.perf_counter(), time.process_time()
            our_scores = ours.predict_scores(texts)
            ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            peer = transformers.pipeline(
                "text-classification", model=ours.model, tokenizer=ours.tokenizer, device="cpu", top_k=None,
                batch_size=batch_size, truncation=True, max_length=args.max_tokens,
            )
            start, start_cpu = time.perf_counter(), time.process_time()
            results = peer(texts)
            peer_s, peer_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            peer_scores = np.array([[{r["label"]: r["score"] for r in row}[label] for label in LABELS] for row in results])
            diff = float(np.abs(peer_scores - our_scores).max())
            print(f"{batch_size:>5} {len(texts) / ours_s:>12.1f} {len(texts) / peer_s:>12.1f} "
                  f"{peer_s / ours_s:>8.2f}x {len(texts) / ours_cpu:>16.1f} {len(texts) / peer_cpu:>16.1f}  {diff:.1e}")


if __name__ == "__main__":
    main()
