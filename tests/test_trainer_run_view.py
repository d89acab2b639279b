"""The run view: a training run's realized shares per phase against the manifest, over HTTP and on the browse page.

A real run trains into ``DATA/runs/<name>`` (as the demo does) on a mixture served by the real
service with read and write tokens; the service lists the run and serves its ``run.json``, and
headless Chromium renders it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_service_e2e import _chrome
from test_trainer_loop import VERSION, free_port, run_config, write_mixture

from midmix.service.app import create_app
from midmix.service.settings import ServiceSettings
from midmix.trainer.metrics import read_metrics
from midmix.trainer.train import train

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

READ, WRITE = "read-token-1", "write-token-1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    manifest = write_mixture(data_dir)
    port = free_port()
    app = create_app(ServiceSettings(data_dir=data_dir, read_tokens=[READ], write_tokens=[WRITE]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.05)
    run_dir = data_dir / "runs" / "demo-run"
    config = run_config(url, run_dir, out_dir=run_dir, service={"url": url, "token": READ, "retries": 1})
    train(config)
    yield url, run_dir, manifest
    server.should_exit = True
    thread.join(timeout=10)


def test_the_service_lists_the_run_and_serves_shares_against_the_manifest(trained):
    url, run_dir, manifest = trained
    assert httpx.get(f"{url}/runs").status_code == 401  # the same read auth as every other read route
    headers = {"Authorization": f"Bearer {READ}"}
    runs = httpx.get(f"{url}/runs", headers=headers).json()
    assert runs == [{"name": "demo-run", "mixture": VERSION, "global_steps": 12, "phases": ["stable", "anneal"]}]
    summary = httpx.get(f"{url}/runs/demo-run", headers=headers).json()
    ends = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "phase_end"]
    for phase, end, spec in zip(summary["phases"], ends, manifest["phases"]):
        total = sum(c["realized_tokens"] for c in spec["components"])
        assert phase["manifest"] == {c["name"]: c["realized_tokens"] / total for c in spec["components"]}
        assert phase["realized"] == end["shares"]["components"] and phase["complete"]
        assert [w["steps"] for w in phase["windows"]] == [[0, 2], [2, 4], [4, 6]]
    missing = httpx.get(f"{url}/runs/nope", headers=headers)
    assert missing.status_code == 404 and "no run 'nope'" in missing.json()["detail"]
    assert httpx.get(f"{url}/runs/.hidden", headers=headers).status_code == 422  # ids are checked at the edge


def test_the_browse_page_shows_a_runs_realized_shares_per_phase(trained, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _ = trained
    summary = httpx.get(f"{url}/runs/demo-run", headers={"Authorization": f"Bearer {READ}"}).json()
    browser = _chrome()
    try:
        browser.get(f"{url}/#run/demo-run")
        browser.execute_script(f"localStorage.setItem('midmix-token', '{READ}')")  # the page's token field keeps it
        browser.get_log("browser")  # drops the 401s of the first load, made before the token was set
        browser.refresh()
        WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".run-phase")) == 2)
        listed = browser.find_element(By.ID, "runs").text
        cards = {card.get_attribute("data-phase"): card for card in browser.find_elements(By.CSS_SELECTOR, ".run-phase")}
        realized = {row.get_attribute("data-component"): row.find_element(By.CSS_SELECTOR, ".realized-share").text
                    for row in cards["stable"].find_elements(By.CSS_SELECTOR, "tr[data-component]")}  # fmt: skip
        lines = len(cards["stable"].find_elements(By.CSS_SELECTOR, "svg.windows path.realized-line"))
        browser.save_screenshot(str(tmp_path / "browse-run.png"))
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        browser.quit()
    assert "demo-run" in listed
    stable = summary["phases"][0]["realized"]
    assert realized == {name: f"{100 * entry['share']:.1f}%" for name, entry in stable.items()}
    assert lines == 2  # web and code
    assert errors == []
    assert (tmp_path / "browse-run.png").stat().st_size > 10_000
