"""Decontamination recall on pasted and edited eval items, and false flags on clean text.

Eval sets: the bundled HumanEval (164 problems, field ``text``) and two sets written here, a
GSM8K-style one (word problems, fields ``question`` and ``answer``) and an MMLU-style one (one
shared instruction, a question and four options, fields ``question`` and ``choices``).

Planted documents: every HumanEval problem pasted into a real code file of the bundled corpus
with its function renamed everywhere, one parameter renamed, indentation changed and docstring
lines re-wrapped; every GSM8K-style question (half of them with the answer) and MMLU-style item
pasted into a real English page. Clean documents: the bundled corpus minus its 30 HumanEval
copies, and 2,000 templated-but-clean documents (the same templates filled with names, numbers
and facts no eval item uses).

Peer: the decontamination of the code at ``--peer-commit`` (share of an item's 13-grams, first
item only), run in a child process on the same documents; it reads one text field, so its
GSM8K/MMLU files hold the fields joined.

    python bench/bench_decontam.py
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_languages import peer_tree  # noqa: E402

NAMES = ["Natalia", "Tom", "Priya", "Kenji", "Amara", "Lucas", "Sofia", "Omar", "Mei", "Jonas"]
CLEAN_NAMES = ["Bartholomew", "Ingrid", "Xavier", "Yolanda", "Quentin", "Zelda"]
THINGS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "coins", "books"]
CLEAN_THINGS = ["seashells", "feathers", "buttons", "acorns"]
MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}."
SUBJECTS = ["astronomy", "chemistry", "world history", "economics", "biology"]


def gsm_item(rng: random.Random, names: list[str], things: list[str]) -> dict:
    name, other, thing = rng.choice(names), rng.choice(names), rng.choice(things)
    a, b, c = rng.randint(12, 95), rng.randint(2, 9), rng.randint(3, 40)
    question = (
        f"{name} has {a} {thing}. {name} gives {c} {thing} to {other} and then buys {b} boxes with "
        f"{b + c} {thing} in each box. How many {thing} does {name} have now?"
    )
    answer = (
        f"After giving some away {name} has {a} - {c} = {a - c} {thing}. The boxes hold {b} * {b + c} = "
        f"{b * (b + c)} {thing}. So {name} has {a - c} + {b * (b + c)} = {a - c + b * (b + c)} {thing}. "
        f"#### {a - c + b * (b + c)}"
    )
    return {"question": question, "answer": answer}


def mmlu_item(rng: random.Random, number: int, salt: str) -> dict:
    subject = rng.choice(SUBJECTS)
    words = [f"{salt}{rng.randint(0, 10**6)}" for _ in range(6)]
    question = (
        f"{MMLU_HEADER.format(subject=subject)}\nWhich statement about the {words[0]} process of {words[1]} "
        f"systems, as measured in study {number}, best explains the {words[2]} effect on {words[3]}?"
    )
    choices = [f"It increases {words[4]} levels", f"It reduces {words[5]} output", "Both of the above", "None of the above"]
    return {"question": question, "choices": choices, "answer": rng.randint(0, 3)}


def edit_humaneval(problem: str, rng: random.Random) -> str:
    """Rename the function (every call too) and its first parameter (a code identifier: in the
    signature; docstring prose that happens to use the same word stays), re-indent, re-wrap."""
    match = re.search(r"def (\w+)\(([^)]*)\)", problem)
    if match:
        params = [p.split(":")[0].strip() for p in match.group(2).split(",") if p.strip()]
        signature = match.group(0)
        if params:
            signature = re.sub(rf"\b{re.escape(params[0])}\b", f"arg_{rng.randint(10, 99)}", signature, count=1)
        problem = problem.replace(match.group(0), signature)
        problem = re.sub(rf"\b{match.group(1)}\b", f"solve_task_{rng.randint(100, 999)}", problem)
    lines = []
    for line in problem.splitlines():
        stripped = line.lstrip(" ")
        indent = (len(line) - len(stripped)) // 2  # 4 spaces -> 2
        if stripped and not stripped.startswith((">>>", "def ", "from ", "import ")) and len(stripped) > 40:
            lines += textwrap.wrap(stripped, width=rng.randint(30, 60), initial_indent=" " * indent, subsequent_indent=" " * indent)
        else:
            lines.append(" " * indent + stripped)
    return "\n".join(lines)


def paste(host: str, item: str, rng: random.Random) -> str:
    paragraphs = host.split("\n\n")
    cut = rng.randint(0, len(paragraphs))
    return "\n\n".join(paragraphs[:cut] + [item] + paragraphs[cut:])


def build(root: Path, seed: int) -> dict:
    """Write eval files (ours and the peer's single-field copies) and the three document sets."""
    from midmix.resources import HUMANEVAL, SAMPLE_CORPUS

    rng = random.Random(seed)
    with gzip.open(SAMPLE_CORPUS, "rt", encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle]
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as handle:
        humaneval = [json.loads(line) for line in handle]
    gsm = [gsm_item(rng, NAMES, THINGS) for _ in range(300)]
    mmlu = [mmlu_item(rng, number, "w") for number in range(300)]
    for name, items, fields in (("gsm8k_style", gsm, ["question", "answer"]), ("mmlu_style", mmlu, ["question", "choices"])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
        joined = [{"text": "\n".join(item[f] if isinstance(item[f], str) else "\n".join(item[f]) for f in fields)} for item in items]
        (root / "peer").mkdir(exist_ok=True)
        (root / "peer" / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in joined))
    code_hosts = [r["text"] for r in corpus if r["source"] == "python-stdlib"]
    web_hosts = [r["text"] for r in corpus if r["domain"] == "web" and r["lang"] == "en"]
    planted = [{"set": "humaneval", "text": paste(rng.choice(code_hosts), edit_humaneval(p["text"], rng), rng)} for p in humaneval]
    for index, item in enumerate(gsm):
        pasted = item["question"] + ("\n\n" + item["answer"] if index % 2 else "")
        planted.append({"set": "gsm8k_style", "text": paste(rng.choice(web_hosts), pasted, rng)})
    for item in mmlu:
        pasted = item["question"] + "\n" + "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(item["choices"]))
        planted.append({"set": "mmlu_style", "text": paste(rng.choice(web_hosts), pasted, rng)})
    clean_corpus = [r["text"] for r in corpus if r["source"] != "humaneval"]
    templated = []
    for number in range(1000):
        fresh = gsm_item(rng, CLEAN_NAMES, CLEAN_THINGS)
        templated.append(paste(rng.choice(web_hosts), fresh["question"] + "\n\n" + fresh["answer"], rng))
        quiz = mmlu_item(rng, 10_000 + number, "z")
        templated.append(quiz["question"] + "\n" + "\n".join(quiz["choices"]))
    return {"planted": planted, "clean_corpus": clean_corpus, "templated": templated}


def detect(root: Path, texts: list[str], ours: bool) -> list[str | None]:
    """Eval set flagged per text with the importable code (ours or the peer's)."""
    from midmix.pipelines.curation import decontam
    from midmix.pipelines.curation.steps.normalize import normalize_text
    from midmix.pipelines.curation.steps.words import split_words
    from midmix.resources import HUMANEVAL

    if "config" in inspect.signature(decontam.build_eval_index).parameters:
        from midmix.pipelines.curation.config import DecontamConfig

        config = DecontamConfig(
            eval_files=[
                str(HUMANEVAL),
                {"path": str(root / "gsm8k_style.jsonl"), "fields": ["question", "answer"]},
                {"path": str(root / "mmlu_style.jsonl"), "fields": ["question", "choices"]},
            ]
        )
        index, n, arg = decontam.build_eval_index(config), config.ngram, config.run_gap
    else:
        files = [str(HUMANEVAL), str(root / "peer" / "gsm8k_style.jsonl"), str(root / "peer" / "mmlu_style.jsonl")]
        index, n, arg = decontam.build_eval_index(files, 13), 13, 0.5
    found: list[str | None] = []
    for start in range(0, len(texts), 256):
        batch = split_words([normalize_text(text) for text in texts[start : start + 256]])
        found += index.contaminating_sets(batch.hashes, batch.offsets, n, arg)
    return found


def child(root: Path, out: Path) -> None:
    sets = json.loads((root / "sets.json").read_text())
    start = time.process_time()
    result = {name: detect(root, [d["text"] if isinstance(d, dict) else d for d in docs], True) for name, docs in sets.items()}
    result["cpu_s"] = time.process_time() - start
    result["docs"] = sum(len(docs) for docs in sets.values())
    out.write_text(json.dumps(result))


def run_side(root: Path, pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = root / f"result-{'peer' if pythonpath else 'ours'}.json"
    subprocess.run([sys.executable, __file__, "--child", str(root), str(out)], env=env, check=True)
    return json.loads(out.read_text())


def report(sets: dict, result: dict, label: str) -> None:
    planted = sets["planted"]
    print(f"\n{label}: {result['cpu_s']:.2f} CPU-s for {result['docs']:,} docs ({1000 * result['cpu_s'] / result['docs']:.2f} CPU-s per 1k docs, index build included)")
    for name in ("humaneval", "gsm8k_style", "mmlu_style"):
        rows = [i for i, doc in enumerate(planted) if doc["set"] == name]
        hits = sum(result["planted"][i] == name for i in rows)
        print(f"  recall {name}: {hits}/{len(rows)} = {hits / len(rows):.3f}")
    for name in ("clean_corpus", "templated"):
        flags = sum(hit is not None for hit in result[name])
        print(f"  flagged {name}: {flags}/{len(result[name])} = {flags / len(result[name]):.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-commit", default="9f52123")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sets = build(root, args.seed)
        (root / "sets.json").write_text(json.dumps(sets))
        ours = run_side(root, None)
        peer = run_side(root, peer_tree(args.peer_commit, root / "peer-code"))
    print(f"planted: {len(sets['planted'])}, clean corpus: {len(sets['clean_corpus'])}, templated clean: {len(sets['templated'])}")
    report(sets, ours, "ours (working tree)")
    report(sets, peer, f"peer (decontam at {args.peer_commit})")


if __name__ == "__main__":
    main()
