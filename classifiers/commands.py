"""``midmix classifiers ...``: train, evaluate, list and bootstrap classifiers (fastText, stacked, transformer)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from midmix.classifiers.loading import MODEL_KINDS
from midmix.cli import add_data_dir_argument

# Label field of the bundled corpus for each known task, used when --label-field is not given.
TASK_LABEL_FIELDS = {"quality": "quality_hint", "domain": "domain", "lang": "lang"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Attach ``classifiers train|eval|list|defaults`` to the ``midmix`` parser."""
    parser = subparsers.add_parser("classifiers", help="train, evaluate and list classifiers")
    commands = parser.add_subparsers(dest="classifiers_command", required=True, metavar="ACTION")

    train = commands.add_parser("train", help="train a classifier on labelled JSONL and register it")
    train.add_argument("--task", required=True, help="quality, domain, lang or any other task name")
    train.add_argument(
        "--kind", default="fasttext", choices=MODEL_KINDS,
        help="fasttext (default), stacked (fastText + structural signals, learned combination) or transformer "
        "(fine-tune the local checkpoint --base)",
    )
    train.add_argument("--base", type=Path, help="transformer: local Hugging Face checkpoint directory to fine-tune")
    train.add_argument("--batch-size", type=int, help="transformer: documents per training step (default 16)")
    train.add_argument("--max-tokens", type=int, help="transformer: tokens of each document (default 256)")
    _add_input_args(train)
    train.add_argument("--name", help="registry name (default: <kind>_<task>, or the task's default model name)")
    train.add_argument("--positive-label", help="the good class of a binary task (default: high/hq if present)")
    for flag, kind in (("--lr", float), ("--epoch", int), ("--dim", int), ("--word-ngrams", int),
                       ("--minn", int), ("--maxn", int), ("--min-count", int), ("--bucket", int)):
        train.add_argument(flag, type=kind, help="fastText parameter (default: the task's tuned recipe); "
                           "--lr and --epoch also set a transformer's")
    train.add_argument("--max-chars", type=int, help="characters of each document used for training")
    train.add_argument("--chunk-words", type=int, help="split training documents into lines of N words")
    add_data_dir_argument(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "eval", help="per-label precision/recall/F1 and a confusion matrix, on the id split or leaving sources out"
    )
    evaluate.add_argument("model", metavar="MODEL_REF", help="registered name, sha256 (prefix), .bin or model directory")
    _add_input_args(evaluate)
    evaluate.add_argument("--all-docs", action="store_true", help="score every document, not only held-out ones")
    evaluate.add_argument(
        "--split", choices=("id", "source"), default="id",
        help="id: the held-out id-hash split (default); source: retrain the model's recipe without each source "
        "in turn and pool the predictions on the held-out sources (slow: one training per source)",
    )
    evaluate.add_argument("--lang-field", default="lang", help="field of the language (per-language figures)")
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
    parser.add_argument("--group-field", default="source", help="source of a document (stacked training, --split source)")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")


def _train(args: argparse.Namespace) -> int:
    from midmix.classifiers.registry import ModelRegistry
    from midmix.classifiers.train import file_trained_on, load_labelled_jsonl

    _check_fraction(args.eval_fraction)
    if args.kind == "transformer" and args.base is None:
        from midmix.errors import MidmixError

        raise MidmixError("--kind transformer needs --base DIR, a local Hugging Face checkpoint to fine-tune")
    label_field = args.label_field or TASK_LABEL_FIELDS.get(args.task, "label")
    examples = load_labelled_jsonl(args.input, args.text_field, label_field, args.id_field, args.group_field)
    print(f"training {args.kind} {args.task} classifier on {len(examples)} labelled documents from {args.input} ...")
    trained_on = file_trained_on(args.input)
    with tempfile.TemporaryDirectory(prefix="midmix-train-") as work:
        trainer = {"fasttext": _train_fasttext, "stacked": _train_stacked, "transformer": _train_transformer}[args.kind]
        model_path, card = trainer(args, examples, trained_on, Path(work))
        card = ModelRegistry(args.data_dir / "models").add(model_path, card)
    print(f"registered {card.name} ({card.kind}) sha256={card.sha256} ({card.train_docs} train, {card.eval_docs} held-out docs)")
    if card.metrics:
        print(format_metrics(card.metrics))
    return 0


def _fasttext_params(args: argparse.Namespace):
    from midmix.classifiers.defaults import RECIPES
    from midmix.classifiers.train import FastTextParams
    from midmix.errors import MidmixError

    recipe = RECIPES.get(args.task)
    overrides = {
        "lr": args.lr, "epoch": args.epoch, "dim": args.dim, "wordNgrams": args.word_ngrams,
        "minn": args.minn, "maxn": args.maxn, "minCount": args.min_count, "bucket": args.bucket,
    }
    base = recipe.params if recipe else FastTextParams()
    try:
        return FastTextParams(**{**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as error:
        raise MidmixError(f"invalid fastText parameter: {error}") from error


def _default_name(args: argparse.Namespace) -> str:
    from midmix.classifiers.defaults import RECIPES

    recipe = RECIPES.get(args.task)
    if args.name:
        return args.name
    if recipe and (recipe.stacked is not None) == (args.kind == "stacked"):
        return recipe.name
    return f"{args.kind}_{args.task}"


def _positive(args: argparse.Namespace) -> str | None:
    from midmix.classifiers.defaults import RECIPES

    recipe = RECIPES.get(args.task)
    return args.positive_label or (recipe.positive_label if recipe else None)


def _train_fasttext(args, examples, trained_on, work: Path):
    from midmix.classifiers.defaults import RECIPES
    from midmix.classifiers.train import train_classifier

    recipe = RECIPES.get(args.task)
    name = _default_name(args)
    return train_classifier(
        examples, name=name, task=args.task, params=_fasttext_params(args), eval_fraction=args.eval_fraction,
        positive_label=_positive(args), trained_on=trained_on, out_path=work / f"{name}.bin",
        max_chars=args.max_chars or (recipe.max_chars if recipe else 4000),
        chunk_words=args.chunk_words or (recipe.chunk_words if recipe else None),
    )


def _train_stacked(args, examples, trained_on, work: Path):
    from midmix.classifiers.defaults import RECIPES
    from midmix.classifiers.stacked import StackedParams, train_stacked_classifier

    recipe = RECIPES.get(args.task)
    base = recipe.stacked if recipe and recipe.stacked else StackedParams(fasttext=_fasttext_params(args))
    params = base.model_copy(update={"fasttext": _fasttext_params(args)})
    return train_stacked_classifier(
        examples, name=_default_name(args), task=args.task, params=params, eval_fraction=args.eval_fraction,
        positive_label=_positive(args), trained_on=trained_on, out_dir=work / "model",
    )


def _train_transformer(args, examples, trained_on, work: Path):
    from midmix.classifiers.transformer_train import TransformerParams, fine_tune
    from midmix.errors import MidmixError

    overrides = {"lr": args.lr, "epochs": args.epoch, "batch_size": args.batch_size, "max_tokens": args.max_tokens}
    try:
        params = TransformerParams(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        raise MidmixError(f"invalid transformer parameter: {error}") from error
    return fine_tune(
        examples, base=args.base, out_dir=work / "model", name=_default_name(args), task=args.task, params=params,
        eval_fraction=args.eval_fraction, positive_label=_positive(args), trained_on=trained_on,
    )


def _eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from midmix.classifiers.evaluation import (
        format_by,
        format_confusion,
        leave_source_out,
        metrics_by,
        predictions,
        recipe_trainer,
    )
    from midmix.classifiers.jsonl import read_jsonl
    from midmix.classifiers.loading import load_model
    from midmix.classifiers.registry import ModelRegistry
    from midmix.classifiers.train import evaluate, label_metrics, load_labelled_jsonl, split_examples

    _check_fraction(args.eval_fraction)
    registry = ModelRegistry(args.data_dir / "models")
    card = registry.card(args.model)
    label_field = args.label_field or TASK_LABEL_FIELDS.get(card.task, "label")
    examples = load_labelled_jsonl(args.input, args.text_field, label_field, args.id_field, args.group_field)
    if args.split == "source":
        trainer = recipe_trainer(card)
        with tqdm(desc="leave-source-out", unit="source") as bar:
            def advance(group: str, done: int, total: int) -> None:
                bar.total = total
                bar.update(1)

            predicted = leave_source_out(examples, trainer, progress=advance)
        scored, scope = examples, "leave-source-out (pooled over held-out sources)"
        metrics = label_metrics([doc.label for doc in examples], predicted)
    else:
        scored = examples if args.all_docs else split_examples(examples, args.eval_fraction)[1]
        model = load_model(registry.path(card.sha256))
        metrics = evaluate(model, scored, positive_label=card.positive_label)
        predicted = predictions(model, scored)
        scope = "all" if args.all_docs else "held-out"
    truth = [doc.label for doc in scored]
    print(f"{card.name} ({card.kind} {card.task}, sha256 {card.sha256[:12]}) on {metrics.docs} {scope} documents of {args.input}")
    print(format_metrics(metrics.model_dump()))
    print(format_confusion(metrics))
    langs = {str(record.get(args.id_field)): str(record.get(args.lang_field) or "-") for _, record in read_jsonl(args.input)}
    if any(lang != "-" for lang in langs.values()):
        print(format_by(metrics_by(truth, predicted, [langs.get(doc.doc_id, "-") for doc in scored]), "language"))
    return 0


def _list(args: argparse.Namespace) -> int:
    from midmix.classifiers.registry import ModelRegistry

    cards = ModelRegistry(args.data_dir / "models").cards()
    if not cards:
        print(f"no models in {args.data_dir / 'models'}; run `midmix classifiers defaults`")
        return 0
    print(f"{'name':<22} {'kind':<11} {'task':<9} {'sha256':<14} {'labels':>6} {'macro_f1':>8} {'roc_auc':>7}  created")
    for card in cards:
        macro = card.metrics.get("macro_f1")
        auc = card.metrics.get("roc_auc")
        print(
            f"{card.name:<22} {card.kind:<11} {card.task:<9} {card.sha256[:12]:<14} {len(card.labels):>6} "
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
