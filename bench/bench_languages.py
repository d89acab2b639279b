"""Heuristic drops per language: this code against the code at a peer commit, same corpus, same run.

Each side runs ``curate_corpus`` (real default models, heuristics and decontamination on, dedup
and quality cut off) on the bundled sample corpus in its own child process; the peer's source
is ``git archive``d into a temporary tree and put first on ``PYTHONPATH``. The table gives, per
corpus language (the corpus's own ``lang`` label), the documents not hinted low and the share
of them the heuristics step drops, before and after, with the reasons after; then how many
English documents changed decision. ``--extra`` adds JSONL corpora (e.g. held-out sources
built by ``bench/build_heldout_languages.py``), each row labelled by its ``lang`` field.

    python bench/bench_languages.py --peer-commit 9f52123
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOCUS = ("ja", "zh", "ko", "hi", "ru", "ar", "fa")
PACKAGE_DIRS = {"classifiers": "classifiers", "pipelines": "pipelines", "service": "service", "trainer": "trainer", "data": "data"}


def measure(corpora: list[str], work: Path) -> dict:
    """Per document id: (heuristic drop reason or None); plus CPU seconds of the curation."""
    import pyarrow.parquet as pq

    from midmix.pipelines.curation.config import CurationConfig
    from midmix.pipelines.curation.curate import curate_corpus

    config = CurationConfig(inputs=corpora, dedup={"exact": False, "minhash": False})
    start = time.process_time()
    manifest = curate_corpus(config, work)
    cpu = time.process_time() - start
    dropped = pq.read_table(work / "datasets" / manifest["version"] / "dropped").to_pylist()
    return {
        "cpu_s": cpu,
        "drops": {row["id"]: row["drop_reason"] for row in dropped if row["drop_step"] == "heuristics"},
        "other_drops": sorted(row["id"] for row in dropped if row["drop_step"] != "heuristics"),
    }


def peer_tree(commit: str, root: Path) -> Path:
    """The peer commit's source laid out as an importable ``midmix`` package under ``root``."""
    root.mkdir(parents=True)
    archive = root / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), commit], check=True)
    source = root / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    package = root / "path" / "midmix"
    package.parent.mkdir(parents=True)
    (source / "midmix").rename(package)
    for name, folder in PACKAGE_DIRS.items():
        (package / name).symlink_to(source / folder)
    return root / "path"


def run_side(corpora: list[str], work: Path, pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = work / "result.json"
    command = [sys.executable, __file__, "--child", str(out), "--work", str(work), *corpora]
    subprocess.run(command, env=env, check=True, cwd=work)
    return json.loads(out.read_text())


def corpus_rows(corpora: list[str]) -> list[dict]:
    import gzip

    rows = []
    for path in corpora:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def report(rows: list[dict], before: dict, after: dict) -> None:
    total, dropped_before, dropped_after = Counter(), Counter(), Counter()
    reasons: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        if row.get("quality_hint") == "low" or row["id"] in after["other_drops"]:
            continue
        lang = row["lang"]
        total[lang] += 1
        dropped_before[lang] += row["id"] in before["drops"]
        if row["id"] in after["drops"]:
            dropped_after[lang] += 1
            reasons[lang][after["drops"][row["id"]]] += 1
    order = [code for code in FOCUS if code in total] + sorted(set(total) - set(FOCUS), key=lambda c: -total[c])
    print("| lang | docs not hinted low | dropped before | after | after: reasons |")
    print("|---|---|---|---|---|")
    for code in order:
        share = lambda n: f"{n} ({n / total[code]:.1%})"  # noqa: E731
        why = ", ".join(f"{reason} {count}" for reason, count in reasons[code].most_common())
        print(f"| {code} | {total[code]} | {share(dropped_before[code])} | {share(dropped_after[code])} | {why} |")
    for code in FOCUS:
        if code not in total:
            print(f"| {code} | 0 (no documents in these corpora) | - | - | - |")
    over = [code for code in FOCUS if total[code] and dropped_after[code] / total[code] > 0.10]
    for code in over:
        print(f"\n{code} is over 10%; by source, with English on the same sources:")
        for source in sorted({row["source"] for row in rows if row["lang"] == code}):
            cells = []
            for lang in (code, "en"):
                ids = [r["id"] for r in rows if r["lang"] == lang and r["source"] == source and r.get("quality_hint") != "low"]
                if ids:
                    cells.append(f"{lang} {sum(i in after['drops'] for i in ids)} of {len(ids)} dropped")
            print(f"- {source}: " + "; ".join(cells))
    english = [row["id"] for row in rows if row["lang"] == "en" and row["id"] not in after["other_drops"]]
    changed = sum((doc in before["drops"]) != (doc in after["drops"]) for doc in english)
    print(f"\nEnglish documents whose heuristic decision changed: {changed} of {len(english)} ({changed / len(english):.2%})")
    print(f"CPU seconds of curate_corpus: before {before['cpu_s']:.1f}, after {after['cpu_s']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-commit", default="9f52123", help="code state to compare against (the 'before')")
    parser.add_argument("--extra", nargs="*", default=[], help="more JSONL corpora with id, text, lang fields")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("corpora", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.child.write_text(json.dumps(measure(args.corpora, args.work / "data")))
        return
    from midmix.resources import SAMPLE_CORPUS

    corpora = [str(SAMPLE_CORPUS), *[str(Path(extra).resolve()) for extra in args.extra]]
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        root = Path(scratch)
        for side in ("before", "after"):
            (root / side).mkdir()
        before = run_side(corpora, root / "before", peer_tree(args.peer_commit, root / "peer"))
        after = run_side(corpora, root / "after", None)
    print(f"peer (before): {args.peer_commit}; after: working tree of {REPO}\n")
    report(corpus_rows(corpora), before, after)


if __name__ == "__main__":
    main()
