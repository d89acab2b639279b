"""``midmix classifiers ...``: train, evaluate, list and bootstrap fastText models."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from midmix.cli import add_data_dir_argument

# Label field of the bundled corpus for each known task, used when --label-field is not given.
TASK_LABEL_FIELDS = {"quality": "quality_hint", "domain": "domain", "lang": "lang"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach ``classifiers train|eval|list|defaults`` to the ``midmix`` parser."""
    parser = subparsers.add_parser("classifiers", help="train, evaluate and list fastText classifiers")
    commands = parser.add_subparsers(dest="classifiers_command", required=True, metavar="ACTION")

    train = commands.add_parser("train", help="train a classifier on labelled JSONL and register it")
    train.add_argument("--task", required=True, help="quality, domain, lang or any other task name")
    _add_input_args(train)
    train.add_argument("--name", help="registry name (default: fasttext_<task>, fasttext_hq for quality)")
    train.add_argument("--positive-label", help="the good class of a binary task (default: high/hq if present)")
    for flag, kind in (("--lr", float), ("--epoch", int), ("--dim", int), ("--word-ngrams", int),
                       ("--minn", int), ("--maxn", int), ("--min-count", int), ("--bucket", int)):
        train.add_argument(flag, type=kind, help="fastText parameter (default: the task's tuned recipe)")
    train.add_argument("--max-chars", type=int, help="characters of each document used for training")
    train.add_argument("--chunk-words", type=int, help="split training documents into lines of N words")
    add_data_dir_argument(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="score a model on the held-out split of labelled JSONL")
    evaluate.add_argument("model", metavar="MODEL_REF", help="registered name, sha256 (prefix) or path to a .bin")
    _add_input_args(evaluate)
    evaluate.add_argument("--all-docs", action="store_true", help="score every document, not only held-out ones")
    add_data_dir_argument(evaluate)
    evaluate.set_defaults(handler=_eval)

    listing = commands.add_parser("list", help="list registered models")
    add_data_dir_argument(listing)
    listing.set_defaults(handler=_list)

    defaults = commands.add_parser("defaults", help="train the bundled quality, domain and language models")
    defaults.add_argument("--corpus", type=Path, help="labelled corpus (default: the bundled sample corpus)")
    add_data_dir_argument(defaults)
    defaults.set_defaults(handler=_defaults)


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="JSONL or JSONL.gz, one document per line")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", help="label field (default: quality_hint, domain or lang by task, else label)")
    parser.add_argument("--id-field", default="id", help="document id; the train/eval split hashes it")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")


def _train(args: argparse.Namespace) -> int:
    from midmix.classifiers.defaults import RECIPES
    from midmix.classifiers.registry import ModelRegistry
    from midmix.classifiers.train import FastTextParams, file_trained_on, load_labelled_jsonl, train_classifier
    from midmix.errors import MidmixError

    _check_fraction(args.eval_fraction)
    recipe = RECIPES.get(args.task)
    label_field = args.label_field or TASK_LABEL_FIELDS.get(args.task, "label")
    examples = load_labelled_jsonl(args.input, args.text_field, label_field, args.id_field)
    overrides = {
        "lr": args.lr, "epoch": args.epoch, "dim": args.dim, "wordNgrams": args.word_ngrams,
        "minn": args.minn, "maxn": args.maxn, "minCount": args.min_count, "bucket": args.bucket,
    }
    base = recipe.params if recipe else FastTextParams()
    try:
        params = FastTextParams(**{**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as error:
        raise MidmixError(f"invalid fastText parameter: {error}") from error
    print(f"training {args.task} classifier on {len(examples)} labelled documents from {args.input} ...")
    name = args.name or (recipe.name if recipe else f"fasttext_{args.task}")
    with tempfile.TemporaryDirectory(prefix="midmix-train-") as work:
        bin_path, card = train_classifier(
            examples,
            name=name,
            task=args.task,
            params=params,
            eval_fraction=args.eval_fraction,
            positive_label=args.positive_label or (recipe.positive_label if recipe else None),
            trained_on=file_trained_on(args.input),
            out_path=Path(work) / f"{name}.bin",
            max_chars=args.max_chars or (recipe.max_chars if recipe else 4000),
            chunk_words=args.chunk_words or (recipe.chunk_words if recipe else None),
        )
        card = ModelRegistry(args.data_dir / "models").add(bin_path, card)
    print(f"registered {card.name} sha256={card.sha256} ({card.train_docs} train, {card.eval_docs} held-out docs)")
    if card.metrics:
        print(format_metrics(card.metrics))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from midmix.classifiers.model import FastTextModel
    from midmix.classifiers.registry import ModelRegistry
    from midmix.classifiers.train import evaluate, load_labelled_jsonl, split_examples

    _check_fraction(args.eval_fraction)
    registry = ModelRegistry(args.data_dir / "models")
    card = registry.card(args.model)
    label_field = args.label_field or TASK_LABEL_FIELDS.get(card.task, "label")
    examples = load_labelled_jsonl(args.input, args.text_field, label_field, args.id_field)
    held_out = examples if args.all_docs else split_examples(examples, args.eval_fraction)[1]
    metrics = evaluate(FastTextModel.load(registry.path(card.sha256)), held_out, positive_label=card.positive_label)
    scope = "all" if args.all_docs else "held-out"
    print(f"{card.name} ({card.task}, sha256 {card.sha256[:12]}) on {metrics.docs} {scope} documents of {args.input}")
    print(format_metrics(metrics.model_dump()))
    return 0


def _list(args: argparse.Namespace) -> int:
    from midmix.classifiers.registry import ModelRegistry

    cards = ModelRegistry(args.data_dir / "models").cards()
    if not cards:
        print(f"no models in {args.data_dir / 'models'}; run `midmix classifiers defaults`")
        return 0
    print(f"{'name':<22} {'task':<9} {'sha256':<14} {'labels':>6} {'macro_f1':>8} {'roc_auc':>7}  created")
    for card in cards:
        macro = card.metrics.get("macro_f1")
        auc = card.metrics.get("roc_auc")
        print(
            f"{card.name:<22} {card.task:<9} {card.sha256[:12]:<14} {len(card.labels):>6} "
            f"{_fmt(macro):>8} {_fmt(auc):>7}  {card.created_at[:19]}"
        )
    return 0


def _defaults(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from midmix.classifiers.defaults import BUNDLED_CORPUS, RECIPES, ensure_default_models

    with tqdm(total=len(RECIPES), desc="default classifiers", unit="model") as bar:
        models = ensure_default_models(
            args.data_dir / "models", args.corpus or BUNDLED_CORPUS, progress=lambda name, done, total: bar.update(1)
        )
    for card in (models.quality, models.domain, models.lang):
        print(f"{card.name:<16} {card.task:<8} sha256={card.sha256[:12]} {_summary(card.metrics)}")
    return 0


def _check_fraction(fraction: float) -> None:
    from midmix.errors import MidmixError

    if not 0.0 < fraction < 1.0:
        raise MidmixError(f"--eval-fraction must be between 0 and 1 (exclusive), got {fraction}")


def format_metrics(metrics: dict[str, Any]) -> str:
    """A per-label precision/recall/F1 table with macro-F1, accuracy and ROC-AUC below it."""
    lines = [f"{'label':<12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for label, row in metrics["per_label"].items():
        lines.append(
            f"{label:<12} {row['precision']:>9.4f} {row['recall']:>7.4f} {row['f1']:>7.4f} {row['support']:>8d}"
        )
    lines.append(_summary(metrics))
    return "\n".join(lines)


def _summary(metrics: dict[str, Any]) -> str:
    summary = f"macro-F1 {_fmt(metrics.get('macro_f1'))}  accuracy {_fmt(metrics.get('accuracy'))}"
    if metrics.get("roc_auc") is not None:
        summary += f"  ROC-AUC {_fmt(metrics['roc_auc'])}"
    return summary


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
