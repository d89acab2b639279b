"""The fast BPE encoder against HF tokenizers' ``encode_batch``: ids compared, tokens per CPU-second.

    python bench/bench_tokenizer.py                  # 32k BPE by `midmix tokenizer train` + four other styles
    python bench/bench_tokenizer.py --styles midmix --vocab-size 8000

Data: the bundled sample corpus (6,461 documents, 28 languages, code, math) written as a curated
dataset. Tokenizers: ``midmix`` is trained by the ``midmix tokenizer train`` command on that dataset
(GPT-2 style byte-level BPE); ``roberta`` (prefix space), ``llama3`` (Split regex, ignore_merges,
reserved special tokens), ``qwen2`` (NFC, one-digit numbers) and ``neox`` (NFC, non-special whitespace
added tokens) are trained with HF ``tokenizers`` in those styles, same corpus and vocabulary size.
Each batch of 1,024 documents is encoded by HF ``encode_batch`` and then by the fast encoder
(alternating, so load bursts hit both), and every document's ids are compared. CPU seconds are the
process's, all threads (HF encodes on every core).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from midmix.pipelines.tokenizer_fast import compare_with_hf
from midmix.pipelines.tokenizer_train import dataset_texts
from midmix.resources import SAMPLE_CORPUS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sample_dataset import write_sample_dataset  # noqa: E402
from tests.tokenizer_styles import train_style  # noqa: E402

STYLES = ("midmix", "roberta", "llama3", "qwen2", "neox")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", nargs="*", default=list(STYLES), choices=STYLES)
    parser.add_argument("--vocab-size", type=int, default=32000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="midmix-bench-tok-") as tmp:
        root = Path(tmp)
        dataset = write_sample_dataset(root / "data", SAMPLE_CORPUS)
        files = [f["path"] for f in dataset["files"] if f["path"].startswith("data/")]
        version_dir = root / "data" / "datasets" / dataset["version"]
        texts = [text for batch in dataset_texts(version_dir, files) for text in batch]
        print(f"corpus: {len(texts):,} documents, {sum(len(t.encode()) for t in texts):,} bytes ({dataset['version']})")
        for style in args.styles:
            path = root / f"{style}.json"
            if style == "midmix":
                subprocess.run([sys.executable, "-m", "midmix", "tokenizer", "train", "--dataset", "latest",
                                "--vocab-size", str(args.vocab_size), "--out", str(path), "--data-dir", str(root / "data")],
                               check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            else:
                train_style(style, texts, args.vocab_size, special_tokens=250).save(str(path))
            batches = [texts[i : i + 1024] for i in range(0, len(texts), 1024)]
            result = compare_with_hf(path.read_text(encoding="utf-8"), batches)
            hf_rate = result["tokens"] / result["hf_cpu_s"]
            fast_rate = result["tokens"] / result["fast_cpu_s"] if result["fast_cpu_s"] else float("nan")
            vocab = HFTokenizer.from_file(str(path)).get_vocab_size()
            print(f"{style:>8} vocab {vocab:,}: {result['tokens']:,} tokens, {result['mismatched_docs']} docs with other ids | "
                  f"HF encode_batch {hf_rate / 1e6:.2f} M tok/CPU-s ({result['hf_cpu_s']:.2f} CPU-s) | "
                  f"fast {fast_rate / 1e6:.2f} M tok/CPU-s ({result['fast_cpu_s']:.2f} CPU-s) | "
                  f"x{fast_rate / hf_rate:.2f} | {result['reason']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
