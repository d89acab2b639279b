"""Curate a corpus into an immutable dataset version: ``curate_corpus`` is the one entry point.

Curation runs as four datatrove stages on the configured executor (local, Ray or Slurm):

1. per input unit, in parallel: read, normalise, language, signals, decontaminate, domain,
   heuristic filter, quality, tokens, dedup signature -> ``intermediate/unit-*.parquet``;
2. one task: global exact + MinHash clustering -> ``dedup/decisions-<unit>.parquet``;
3. per unit, in parallel: apply decisions -> ``out/data`` and ``out/dropped`` parts;
4. one task: copy the parts into a staging dir, write the manifest last, rename into place.

Work files live in ``DATA/.staging/curate-<version>/``; datatrove skips completed tasks, so a
rerun after an interruption resumes and publishes the same version with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from datatrove.pipeline.base import PipelineStep

import midmix
from midmix.errors import MidmixError
from midmix.hashing import sha256_file, version_id
from midmix.pipelines.curation.config import DEFAULT_MODEL, CurationConfig
from midmix.pipelines.curation.decontam import Decontaminate, check_eval_sets
from midmix.pipelines.curation.dedup.minhash import DedupSignature
from midmix.pipelines.curation.dedup.stage import DedupClusters
from midmix.pipelines.curation.manifest import build_manifest
from midmix.pipelines.curation.readers import CorpusReader, InputUnit, resolve_inputs
from midmix.pipelines.curation.steps.classify import (
    DomainTagger,
    LanguageTagger,
    QualityScorer,
    ScoreColumn,
)
from midmix.pipelines.curation.steps.heuristics import HeuristicFilter
from midmix.pipelines.curation.steps.normalize import NormalizeText
from midmix.pipelines.curation.steps.signals import HeuristicSignals
from midmix.pipelines.curation.steps.tokens import TokenCounter
from midmix.pipelines.curation.writer import CuratedWriter, IntermediateWriter
from midmix.pipelines.executors import datatrove_executor, datatrove_logs_to
from midmix.pipelines.tokenizer import Tokenizer
from midmix.progress import ProgressCallback
from midmix.publish import publishing


@dataclass
class CurationPlan:
    """Everything resolved before any work: input units, model files, version id, manifest header."""

    config: CurationConfig
    units: list[InputUnit]
    lang_model: str
    domain_model: str
    quality: dict[str, ScoreColumn]
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The dataset version id (``ds-...``)."""
        return self.header["version"]


def _file_facts(url: str) -> dict[str, Any]:
    """Path, sha256 and size of one input file, local or behind any fsspec URL."""
    if "://" not in url:
        return {"path": url, "sha256": sha256_file(url), "bytes": os.path.getsize(url)}
    digest, size = hashlib.sha256(), 0
    with fsspec.open(url, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": url, "sha256": digest.hexdigest(), "bytes": size}


def _resolve_models(
    config: CurationConfig, models_dir: Path
) -> tuple[str, str, dict[str, ScoreColumn], dict[str, str]]:
    from midmix.classifiers.registry import ModelRegistry

    registry = ModelRegistry(models_dir)
    refs = [config.language.model, config.domain.model, *config.quality.classifiers.values()]
    defaults = None
    if DEFAULT_MODEL in refs:
        from midmix.classifiers.defaults import ensure_default_models

        defaults = ensure_default_models(models_dir)

    def card(ref: str, task: str):
        return getattr(defaults, task) if ref == DEFAULT_MODEL else registry.card(ref)

    lang, domain = card(config.language.model, "lang"), card(config.domain.model, "domain")
    missing = [label for label in config.domain.labels if label not in domain.labels]
    if missing:
        raise MidmixError(
            f"domain.labels {missing} are not labels of model {domain.name} ({', '.join(domain.labels)}); fix domain.labels"
        )
    quality, shas = {}, {"lang": lang.sha256, "domain": domain.sha256}
    for name, ref in config.quality.classifiers.items():
        found = card(ref, "quality")
        positive = found.positive_label or ("high" if "high" in found.labels else None)
        positive = positive or (found.labels[0] if len(found.labels) == 1 else None)  # a regression output
        if positive is None:
            raise MidmixError(
                f"quality classifier '{name}' ({found.name}) has no positive label; its labels are {found.labels}"
            )
        quality[name] = ScoreColumn(str(registry.path(found.sha256)), positive)
        shas[name] = found.sha256
    return str(registry.path(lang.sha256)), str(registry.path(domain.sha256)), quality, shas


def plan_curation(config: CurationConfig, data_dir: Path) -> CurationPlan:
    """Resolve inputs and models and derive the version id; fails before writing any data."""
    units = resolve_inputs(config.inputs)
    lang_model, domain_model, quality, shas = _resolve_models(config, Path(data_dir) / "models")
    tokenizer = Tokenizer(config.tokenizer)
    inputs = [_file_facts(unit.url) for unit in units]
    eval_files = []
    if config.decontam.enabled:
        check_eval_sets(config.decontam)
        for eval_set in config.decontam.eval_files:
            hashes = [_file_facts(unit.url)["sha256"] for unit in resolve_inputs([eval_set.path])]
            eval_files.append({**eval_set.model_dump(mode="json"), "path": hashes})
    hashed_config = config.model_dump(mode="json", exclude={"inputs", "executor", "batch_size"})
    hashed_config["tokenizer"] = tokenizer.sha256
    hashed_config["decontam"]["eval_files"] = eval_files
    version = version_id(
        "ds",
        {
            "inputs": [[unit.source_name, facts["sha256"]] for unit, facts in zip(units, inputs)],
            "config": hashed_config,
            "models": shas,
            "code_version": midmix.__version__,
        },
    )
    header = {
        "version": version,
        "inputs": inputs,
        "config": config.model_dump(mode="json"),
        "models": shas,
        "code_version": midmix.__version__,
        "tokenizer": tokenizer.describe(),
    }
    return CurationPlan(config, units, lang_model, domain_model, quality, header)


def stage_one_pipeline(
    plan: CurationPlan, intermediate_dir: Path, progress: ProgressCallback | None
) -> list[PipelineStep]:
    """Read and annotate: every step marks drops instead of removing documents."""
    config, size = plan.config, plan.config.batch_size
    steps: list[PipelineStep] = [
        CorpusReader(plan.units, config.fields),
        NormalizeText(size),
        LanguageTagger(plan.lang_model, config.language.keep, config.language.max_chars, size),
        HeuristicSignals(config.heuristics, size),
    ]
    if config.decontam.enabled:
        steps.append(Decontaminate(config.decontam, size))
    steps.append(DomainTagger(plan.domain_model, config.domain.labels, config.domain.max_chars, size))
    if config.heuristics.enabled:
        steps.append(HeuristicFilter(config.heuristics, size))
    steps += [
        QualityScorer(plan.quality, config.quality.primary, config.quality.min_score, config.quality.max_chars, size),
        TokenCounter(config.tokenizer, size),
        DedupSignature(config.dedup.ngram, config.dedup.num_bands * config.dedup.rows_per_band, size),
        IntermediateWriter(str(intermediate_dir), len(plan.units), progress),
    ]
    return steps


def step_names(config: CurationConfig) -> list[str]:
    """Names of the steps that may drop documents, in pipeline order (the manifest's ``steps``)."""
    names = ["read", "normalize", "language"]
    names += ["decontam"] if config.decontam.enabled else []
    names += ["heuristics"] if config.heuristics.enabled else []
    return names + ["quality", "dedup"]


class PublishDataset(PipelineStep):
    """Stage 4: link the parts into a staging dir, write the manifest last, rename into place."""

    name = "publish"
    type = "📦 - PUBLISH"

    def __init__(self, out_dir: str, final_dir: str, header: dict, names: list[str], quality_names: list[str]):
        super().__init__()
        self.out_dir = out_dir
        self.final_dir = final_dir
        self.header = header
        self.names = names
        self.quality_names = quality_names

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        final = Path(self.final_dir)
        if rank != 0 or (final / "manifest.json").is_file():
            return
        with publishing(final) as staging:
            for part in sorted(Path(self.out_dir).rglob("part-*.parquet")):
                target = staging / part.relative_to(self.out_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(part, target)
            for folder in ("data", "dropped"):
                (staging / folder).mkdir(exist_ok=True)
            manifest = build_manifest(staging, self.header, self.names, self.quality_names)
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        return
        yield


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _executor(config: CurationConfig, pipeline: list, tasks: int, logging_dir: Path, depends: Any, name: str) -> Any:
    """The configured datatrove executor for one stage (``midmix.pipelines.executors``)."""
    return datatrove_executor(config.executor, pipeline, tasks, logging_dir, depends, name)


def curate_corpus(config: CurationConfig, data_dir: Path, progress: ProgressCallback | None = None) -> dict:
    """Curate ``config.inputs`` into ``DATA/datasets/<version>``; an existing version returns at once."""
    data_dir = Path(data_dir)
    plan = plan_curation(config, data_dir)
    final = data_dir / "datasets" / plan.version
    if (final / "manifest.json").is_file():
        return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
    tasks = min(config.executor.tasks, len(plan.units))  # a task reads whole input files
    work = data_dir / ".staging" / f"curate-{plan.version}" / f"tasks-{tasks}"
    in_process = config.executor.kind == "local" and (config.executor.workers == 1 or tasks == 1)
    # Steps get the callback only when every stage runs in this process: a worker pool pickles each
    # executor with its dependencies, callback included. (A closure, so datatrove's deepcopy of
    # the pipeline keeps calling the caller's object.)
    report = (lambda step, done, total: progress(step, done, total)) if progress and in_process else None
    n_units = len(plan.units)
    decisions = work / "dedup"
    stage_one = _executor(
        config,
        stage_one_pipeline(plan, work / "intermediate", report),
        tasks,
        work / "logs" / "1-annotate",
        None,
        "annotate",
    )
    stage_two = _executor(
        config,
        [DedupClusters(str(work / "intermediate"), str(decisions), n_units, config.dedup, config.inputs, report)],
        1,
        work / "logs" / "2-dedup",
        stage_one,
        "dedup",
    )
    stage_three = _executor(
        config,
        [CuratedWriter(str(work / "intermediate"), str(decisions), str(work / "out"), n_units)],
        tasks,
        work / "logs" / "3-write",
        stage_two,
        "write",
    )
    publish = PublishDataset(
        str(work / "out"), str(final), plan.header, step_names(config), list(config.quality.classifiers)
    )
    stage_four = _executor(config, [publish], 1, work / "logs" / "4-publish", stage_three, "publish")
    with datatrove_logs_to(work / "datatrove.log"):
        stage_four.run()
    if not (final / "manifest.json").is_file():
        return {"version": plan.version, "kind": "dataset", "state": "submitted", "work_dir": str(work)}
    shutil.rmtree(work.parent, ignore_errors=True)
    if progress:
        progress("publish", 1, 1)
    return json.loads((final / "manifest.json").read_text(encoding="utf-8"))
