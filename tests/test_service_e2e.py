"""End to end through the service: real curation job -> real 3-phase build job -> shards served
-> the browse page rendering them in headless Chromium."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from midmix.hashing import sha256_file
from midmix.pipelines.catalog import Catalog
from midmix.pipelines.mixtures.build import mixture_version
from midmix.pipelines.mixtures.spec import MixtureSpec
from midmix.service.client import MidmixClient
from tests.conftest import make_data_dir
from tests.service_fixtures import RunningService, start_service

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)


def _domain(value: str) -> dict:
    return {"column": "domain", "op": "==", "value": value}


SPEC = {
    "name": "e2e-3phase",
    "eval": {"count": 5},
    "phases": [
        {"name": "stable", "token_budget": 300000, "components": [
            {"name": "web", "datasets": ["latest"], "select": _domain("web"), "weight": 0.5},
            {"name": "code", "datasets": ["latest"], "select": _domain("code"), "weight": 0.3},
            {"name": "math", "datasets": ["latest"], "select": _domain("math"), "weight": 0.2}]},
        {"name": "anneal", "token_budget": 100000, "curriculum": {"key": "quality_score"}, "components": [
            {"name": "math", "datasets": ["latest"], "select": _domain("math"), "weight": 0.5},
            {"name": "code", "datasets": ["latest"],
             "select": {"all": [_domain("code"), {"column": "quality_score", "op": "top_percent", "value": 50}]},
             "weight": 0.5}]},
        {"name": "long-context", "token_budget": 50000, "seq_len": 1024, "rope_theta": 500000.0, "components": [
            {"name": "docs", "datasets": ["latest"], "select": {"column": "domain", "op": "in", "value": ["academic", "web"]},
             "weight": 1.0}]},
    ],
}  # fmt: skip


@dataclass
class EndToEnd:
    service: RunningService
    client: MidmixClient
    curation: dict
    curation_events: list[dict]
    build: dict


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, default_models_dir: Path, corpus_subset: Path):
    data_dir = make_data_dir(tmp_path_factory.mktemp("e2e") / "data", default_models_dir)
    service = start_service(data_dir, config={"input_roots": [str(corpus_subset.parent)]})
    client = MidmixClient(service.url, retries=0)
    try:
        events: list[dict] = []
        curation = client.wait(
            client.curate({"inputs": [str(corpus_subset)]})["id"], poll=0.2, timeout=300, on_progress=events.append
        )
        build = client.wait(client.build(SPEC)["id"], poll=0.2, timeout=120)
        yield EndToEnd(service, client, curation, events, build)
    finally:
        client.close()
        service.stop()


def test_curation_job_reports_progress_and_publishes_the_dataset(e2e: EndToEnd) -> None:
    assert (e2e.curation["state"], e2e.curation["progress"], e2e.curation["error"]) == ("succeeded", 100.0, None)
    version = e2e.curation["result"]
    manifest = e2e.client.dataset(version)
    rows = sum(
        pq.read_metadata(e2e.service.data_dir / "datasets" / version / f["path"]).num_rows
        for f in manifest["files"]
        if f["path"].startswith("data/")
    )
    assert [d["version"] for d in e2e.client.datasets()] == [version]
    assert e2e.client.datasets()[0]["docs"] == manifest["counts"]["docs"] == rows
    running = [event for event in e2e.curation_events if event["state"] == "running" and event["step"] != "starting"]
    assert running, "no progress was reported while the curation ran"
    assert all(event["docs_done"] >= 0 and 0 <= (event["progress"] or 0) <= 100 for event in running)


def test_classifiers_lists_the_registered_models(e2e: EndToEnd) -> None:
    cards = e2e.client.classifiers()
    assert sorted(card["task"] for card in cards) == ["domain", "lang", "quality"]
    models = e2e.service.data_dir / "models"
    # fastText models are files <sha256>.bin, stacked and transformer models folders <sha256>/
    stored = [models / (f"{card['sha256']}.bin" if card["kind"] == "fasttext" else card["sha256"]) for card in cards]
    assert all(path.exists() for path in stored)


def test_build_job_publishes_the_local_version_and_every_shard_downloads_intact(e2e: EndToEnd, tmp_path: Path) -> None:
    assert e2e.build["state"] == "succeeded", e2e.build["error"]
    version = e2e.build["result"]
    with Catalog(e2e.service.data_dir) as catalog:
        assert version == mixture_version(MixtureSpec.model_validate(SPEC), catalog)
    manifest = e2e.client.manifest(version)
    for phase in manifest["phases"]:
        shards = e2e.client.shards(version, phase["name"])
        paths = [e2e.client.download(version, s["path"], tmp_path / phase["name"] / s["name"]) for s in shards]
        assert [sha256_file(path) for path in paths] == [s["sha256"] for s in shards]
        assert sum(pq.read_metadata(path).num_rows for path in paths) == phase["docs"]
    math_eval = manifest["eval"]["math"]
    assert (
        sha256_file(e2e.client.download(version, math_eval["path"], tmp_path / "eval-math.parquet"))
        == math_eval["sha256"]
    )


def test_plan_is_a_dry_run_matching_the_build(e2e: EndToEnd) -> None:
    plan = e2e.client.plan(SPEC)
    manifest = e2e.client.manifest(e2e.build["result"])
    assert [phase["name"] for phase in plan["phases"]] == [phase["name"] for phase in manifest["phases"]]
    assert [m["version"] for m in e2e.client.mixtures()] == [e2e.build["result"]]


def test_diff_of_a_version_with_itself_changes_nothing(e2e: EndToEnd) -> None:
    version = e2e.build["result"]
    diff = e2e.client.diff(version, version)
    assert (diff["a"], diff["b"]) == (version, version)
    assert [(phase["name"], phase["tokens_delta"]) for phase in diff["phases"]] == [
        ("stable", 0),
        ("anneal", 0),
        ("long-context", 0),
    ]


def test_remote_cli_builds_waits_lists_and_shows(e2e: EndToEnd, tmp_path: Path, capsys) -> None:
    import yaml

    from midmix.cli import main

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    url = ["--url", e2e.service.url]
    assert main(["remote", "build", str(spec_file), "--wait", "--print-version", *url]) == 0
    built = capsys.readouterr().out.strip()
    assert main(["remote", "list", *url]) == 0
    listing = capsys.readouterr().out
    assert main(["remote", "show", built, *url]) == 0
    shown = capsys.readouterr().out
    assert main(["remote", "status", e2e.build["id"], *url]) == 0
    status = capsys.readouterr().out
    assert main(["remote", "show", "mix-0000000000000000", *url]) == 2
    missing = capsys.readouterr().err
    assert built == e2e.build["result"]
    assert listing.startswith(f"{built}  e2e-3phase")
    assert "phase anneal:" in shown and "phase long-context:" in shown
    assert '"state": "succeeded"' in status
    assert (
        missing.strip()
        == "midmix remote: error: no mixture version 'mix-0000000000000000'; list them with GET /mixtures"
    )


def _chrome():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip(
            "headless browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tempfile.mkdtemp()}",
        "--window-size=1400,2200",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_browse_page_renders_phases_composition_and_quality(e2e: EndToEnd, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    version = e2e.build["result"]
    manifest = e2e.client.manifest(version)
    browser = _chrome()
    try:
        browser.get(f"{e2e.service.url}/")
        WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".phase")) == 3)
        phases = [card.get_attribute("data-phase") for card in browser.find_elements(By.CSS_SELECTOR, ".phase")]
        title = browser.find_element(By.ID, "mixture-title").text
        total = browser.find_element(By.ID, "mixture-tokens").text
        realized = [node.text for node in browser.find_elements(By.CSS_SELECTOR, ".phase .realized")]
        stable_charts = [
            h.text for h in browser.find_elements(By.CSS_SELECTOR, '.phase[data-phase="stable"] .chart h4')
        ]
        stable_legend = browser.find_element(By.CSS_SELECTOR, '.phase[data-phase="stable"]').text
        histogram_bars = len(browser.find_elements(By.CSS_SELECTOR, ".lineage svg.histogram rect"))
        browser.save_screenshot(str(tmp_path / "browse-mixture.png"))

        browser.get(f"{e2e.service.url}/#dataset/{e2e.curation['result']}")
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#detail svg.histogram"))
        dataset_text = browser.find_element(By.ID, "detail").text
        browser.save_screenshot(str(tmp_path / "browse-dataset.png"))
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        browser.quit()
    assert phases == ["stable", "anneal", "long-context"]
    assert title == "e2e-3phase"
    assert total == f"{sum(phase['tokens'] for phase in manifest['phases']):,}"
    assert realized == [f"{phase['tokens']:,}" for phase in manifest["phases"]]
    assert stable_charts == ["tokens by component", "tokens by domain", "tokens by source"]
    assert "web" in stable_legend and "repetition" in stable_legend.lower()
    assert histogram_bars > 0
    assert "Curation steps" in dataset_text and "decontam" in dataset_text
    assert errors == [], errors
    assert (tmp_path / "browse-mixture.png").stat().st_size > 10_000
