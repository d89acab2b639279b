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
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tokenizers import Regex, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from midmix.pipelines.tokenizer_fast import SPLIT_PATTERNS, compare_with_hf
from midmix.pipelines.tokenizer_train import dataset_texts
from midmix.resources import SAMPLE_CORPUS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sample_dataset import write_sample_dataset  # noqa: E402

LLAMA3, QWEN2 = list(SPLIT_PATTERNS)
STYLES = ("midmix", "roberta", "llama3", "qwen2", "neox")


def train_style(style: str, texts: list[str], vocab_size: int, out: Path) -> None:
    """A byte-level BPE in the configuration of ``style`` (never downloaded: trained on ``texts``)."""
    tokenizer = HFTokenizer(BPE())
    split = {"llama3": LLAMA3, "qwen2": QWEN2}.get(style)
    if split:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])  # fmt: skip
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=style == "roberta")
    if style in ("qwen2", "neox"):
        tokenizer.normalizer = normalizers.NFC()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if style == "llama3":
        config = json.loads(tokenizer.to_str())
        config["model"]["ignore_merges"] = True
        tokenizer = HFTokenizer.from_str(json.dumps(config))
        tokenizer.add_special_tokens([f"<|reserved_special_token_{i}|>" for i in range(250)])
    if style == "qwen2":
        tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    if style == "neox":
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(" " * n, normalized=True) for n in range(2, 25)])
    tokenizer.save(str(out))


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
                train_style(style, texts, args.vocab_size, path)
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
