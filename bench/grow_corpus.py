"""Grow the bundled sample corpus into an N-document benchmark corpus with planted duplicates.

Every text is real: unique documents recombine runs of paragraphs from several real documents
of the same domain and language, so they read like the sample corpus but are distinct. On top
of them we plant, with known ground truth:

- exact duplicates (same text, new id): dedup must leave none of them;
- near duplicates: word edits until the 5-gram word-shingle Jaccard with the base is in
  [0.80, 0.97] (the true Jaccard is recorded per pair): dedup should find them;
- control pairs with Jaccard in [0.50, 0.70]: similar but not duplicates, dedup must not merge them.

Writes ``<out>`` (JSONL.gz, the corpus fields) and ``<out stem>.truth.jsonl`` (one planted pair
per line: kind, a, b, jaccard). Same seed and N, same bytes.

    python bench/grow_corpus.py --docs 100000 --out /tmp/midmix-bench/corpus-100k.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SAMPLE_CORPUS = (
    Path(__file__).resolve().parent.parent
    / "data"
    / "sample-corpus"
    / "corpus.jsonl.gz"
)
SHINGLE_WORDS = 5
NEAR_BAND = (0.80, 0.97)
CONTROL_BAND = (0.50, 0.70)
MIN_BASE_WORDS = 60
MAX_DOC_CHARS = 6_000
SHARE_EXACT, SHARE_NEAR, SHARE_CONTROL = 0.05, 0.08, 0.03
_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    """The ground-truth similarity basis: n-grams of lower-cased ``\\w+`` words (whole text if shorter)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity of two shingle sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class PlantedPair:
    """One planted pair of the ground truth: ``b`` was made from ``a``."""

    kind: str  # exact | near | control
    a: str
    b: str
    jaccard: float


def load_paragraph_pools(
    path: Path,
) -> tuple[list[dict], dict[tuple[str, str], list[list[str]]]]:
    """Real documents and, per (domain, lang), each document's paragraphs (a long single block split by lines)."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    pools: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    for doc in docs:
        paragraphs = [p for p in doc["text"].split("\n\n") if p.strip()]
        if len(paragraphs) == 1:
            lines = paragraphs[0].split("\n")
            paragraphs = ["\n".join(lines[i : i + 6]) for i in range(0, len(lines), 6)]
        pools[(doc["domain"], doc["lang"])].append(paragraphs)
    return docs, pools


def recombine(
    rng: random.Random, template: dict, pool: list[list[str]], index: int
) -> dict:
    """A fresh real-text document: runs of 1-3 paragraphs from random documents of the template's group."""
    target = min(len(template["text"]), MAX_DOC_CHARS)
    parts: list[str] = []
    size = 0
    while size < target:
        paragraphs = rng.choice(pool)
        start = rng.randrange(len(paragraphs))
        for paragraph in paragraphs[start : start + rng.randint(1, 3)]:
            if parts and size + len(paragraph) > target * 1.25:
                size = target  # the next paragraph would overshoot: the document is long enough
                break
            parts.append(paragraph)
            size += len(paragraph) + 2
    return {
        "id": f"grow-{index:07d}",
        "text": "\n\n".join(parts),
        "domain": template["domain"],
        "lang": template["lang"],
        "source": template["source"],
        "quality_hint": template.get("quality_hint"),
        "meta": {"grown_from": template["id"]},
    }


def edit_words(
    rng: random.Random, text: str, band: tuple[float, float]
) -> tuple[str, float] | None:
    """Replace, delete or insert words at random positions until the Jaccard with ``text`` lands in ``band``.

    The edit plan is fixed up front and applied as a prefix of k edits; k is bisected because the
    Jaccard falls (almost) monotonically with k. Returns None when no k lands in the band.
    """
    spans = [m.span() for m in _WORD.finditer(text)]
    vocabulary = [text[s:e] for s, e in spans]
    positions = rng.sample(range(len(spans)), len(spans))
    plan = [
        (pos, rng.choice(("replace", "delete", "insert")), rng.choice(vocabulary))
        for pos in positions
    ]
    original = shingles(text)
    target = rng.uniform(*band)

    def apply(k: int) -> str:
        edits = {pos: (op, word) for pos, op, word in plan[:k]}
        out, last = [], 0
        for pos, (start, end) in enumerate(spans):
            if pos not in edits:
                continue
            op, word = edits[pos]
            out.append(text[last:start])
            out.append(
                {"replace": word, "delete": "", "insert": f"{word} {text[start:end]}"}[
                    op
                ]
            )
            last = end
        out.append(text[last:])
        return "".join(out)

    low, high = 1, len(plan)
    while low < high:
        mid = (low + high) // 2
        if jaccard(original, shingles(apply(mid))) > target:
            low = mid + 1
        else:
            high = mid
    for k in (low, low - 1):
        edited = apply(k)
        score = jaccard(original, shingles(edited))
        if band[0] <= score <= band[1] and edited != text:
            return edited, score
    return None


def grow(
    n_docs: int, seed: int, source: Path = SAMPLE_CORPUS
) -> tuple[list[dict], list[PlantedPair]]:
    """N documents (unique recombinations plus planted duplicates, shuffled) and the planted pairs."""
    rng = random.Random(seed)
    templates, pools = load_paragraph_pools(source)
    n_exact, n_near, n_control = (
        round(n_docs * share) for share in (SHARE_EXACT, SHARE_NEAR, SHARE_CONTROL)
    )
    n_unique = n_docs - n_exact - n_near - n_control
    unique = []
    for index in range(n_unique):
        template = rng.choice(templates)
        unique.append(
            recombine(
                rng, template, pools[(template["domain"], template["lang"])], index
            )
        )

    bases = [doc for doc in unique if len(_WORD.findall(doc["text"])) >= MIN_BASE_WORDS]
    rng.shuffle(bases)
    planted_docs: list[dict] = []
    pairs: list[PlantedPair] = []
    next_index = n_unique

    def plant(base: dict, text: str, kind: str, score: float) -> None:
        nonlocal next_index
        planted_docs.append({**base, "id": f"{kind}-{next_index:07d}", "text": text})
        pairs.append(
            PlantedPair(kind, base["id"], f"{kind}-{next_index:07d}", round(score, 6))
        )
        next_index += 1

    for base in bases[:n_exact]:
        plant(base, base["text"], "exact", 1.0)
    candidates = iter(bases[n_exact:])
    for kind, count, band in (
        ("near", n_near, NEAR_BAND),
        ("control", n_control, CONTROL_BAND),
    ):
        planted = 0
        while planted < count:
            base = next(candidates)
            edited = edit_words(rng, base["text"], band)
            if edited is not None:
                plant(base, edited[0], kind, edited[1])
                planted += 1

    docs = unique + planted_docs
    rng.shuffle(docs)
    return docs, pairs


def truth_path(corpus_path: Path) -> Path:
    """Where the ground truth of a grown corpus lives: beside it, ``<stem>.truth.jsonl``."""
    return corpus_path.with_name(
        corpus_path.name.removesuffix(".jsonl.gz") + ".truth.jsonl"
    )


def load_truth(corpus_path: Path) -> list[PlantedPair]:
    """The planted pairs written by :func:`write_corpus` for ``corpus_path``."""
    with open(truth_path(corpus_path), encoding="utf-8") as handle:
        return [PlantedPair(**json.loads(line)) for line in handle]


def write_corpus(docs: list[dict], pairs: list[PlantedPair], out: Path) -> None:
    """Write the corpus (deterministic gzip: no name, no mtime in the header) and its ground truth."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(out, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle,
    ):
        for doc in docs:
            handle.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(truth_path(out), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(pair.__dict__) + "\n" for pair in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--docs", type=int, required=True, help="documents in the grown corpus"
    )
    parser.add_argument("--out", type=Path, required=True, help="output .jsonl.gz path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source", type=Path, default=SAMPLE_CORPUS, help="real corpus to grow from"
    )
    args = parser.parse_args()
    docs, pairs = grow(args.docs, args.seed, args.source)
    write_corpus(docs, pairs, args.out)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for pair in pairs:
        by_kind[pair.kind].append(pair.jaccard)
    chars = sum(len(doc["text"]) for doc in docs)
    print(
        f"wrote {len(docs)} docs ({chars / 1e6:.1f} M chars) to {args.out}; truth {truth_path(args.out)}"
    )
    for kind, scores in by_kind.items():
        print(
            f"  {kind}: {len(scores)} pairs, jaccard min {min(scores):.3f} mean {sum(scores) / len(scores):.3f}"
        )


if __name__ == "__main__":
    main()
