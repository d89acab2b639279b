"""The service's read paths over real HTTP: manifests, shard listing, byte serving with Range
and ETags, path containment, error bodies, auth, and the client's retry behaviour."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from midmix.errors import MidmixError, NotFoundError
from midmix.hashing import sha256_file
from midmix.service.client import MidmixClient
from tests.service_fixtures import RunningService, free_port, start_service, write_fixture_mixture

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

VERSION = "mix-00000000000000aa"
SHARD = "phases/stable/web-00000.parquet"


SYMLINKED = "mix-00000000000000bb"
SMALLER = "mix-00000000000000cc"  # the same mixture with the last 500 rows of every component gone


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("data")
    manifest = write_fixture_mixture(data_dir, VERSION)
    write_fixture_mixture(data_dir, SMALLER, rows=2500)
    _plant_symlinked_shard(data_dir, tmp_path_factory.mktemp("outside") / "secret.txt")
    service = start_service(data_dir)
    yield service, manifest
    service.stop()


@pytest.fixture
def client(served) -> MidmixClient:
    with MidmixClient(served[0].url, retries=0) as client:
        yield client


def shard_path(served) -> Path:
    return served[0].data_dir / "mixtures" / VERSION / SHARD


def test_health_and_version(client: MidmixClient) -> None:
    assert client.health() == {"status": "ok"}
    assert client.version() == {"version": "0.1.0"}


def test_mixture_list_and_manifest_round_trip(client: MidmixClient, served) -> None:
    listed = [entry for entry in client.mixtures() if entry["version"] == VERSION]
    assert len(listed) == 1
    assert [(phase["name"], phase["tokens"]) for phase in listed[0]["phases"]] == [
        (phase["name"], phase["tokens"]) for phase in served[1]["phases"]
    ]
    assert client.manifest(VERSION) == served[1]


def test_manifest_etag_gives_304(served) -> None:
    url = f"{served[0].url}/mixtures/{VERSION}"
    first = httpx.get(url)
    again = httpx.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert (first.status_code, again.status_code, again.content) == (200, 304, b"")


def test_shards_listed_in_component_order_with_hashes(client: MidmixClient, served) -> None:
    shards = client.shards(VERSION, "stable")
    assert [(s["name"], s["component"], s["path"]) for s in shards] == [
        ("web-00000.parquet", "web", "phases/stable/web-00000.parquet"),
        ("code-00000.parquet", "code", "phases/stable/code-00000.parquet"),
    ]
    assert shards[0]["sha256"] == sha256_file(shard_path(served))
    assert shards[0]["bytes"] == shard_path(served).stat().st_size


def test_unknown_phase_names_the_phases(client: MidmixClient) -> None:
    with pytest.raises(NotFoundError, match="no phase 'warmup'; its phases are: stable, anneal"):
        client.shards(VERSION, "warmup")


def test_unknown_version_is_404_with_detail(served) -> None:
    response = httpx.get(f"{served[0].url}/mixtures/mix-ffffffffffffffff")
    assert response.status_code == 404
    assert response.json() == {"detail": "no mixture version 'mix-ffffffffffffffff'; list them with GET /mixtures"}


def test_download_matches_file_and_sha(client: MidmixClient, served, tmp_path: Path) -> None:
    dest = client.download(VERSION, SHARD, tmp_path / "web.parquet")
    assert dest.read_bytes() == shard_path(served).read_bytes()
    tokenizer = client.download(VERSION, "tokenizer.json", tmp_path / "tok.json")
    assert tokenizer.read_text() == '{"fixture": true}'


def test_download_resumes_from_partial_file(client: MidmixClient, served, tmp_path: Path) -> None:
    original = shard_path(served).read_bytes()
    dest = tmp_path / "web.parquet"
    (tmp_path / "web.parquet.part").write_bytes(original[:5000])
    client.download(VERSION, SHARD, dest)
    assert dest.read_bytes() == original
    assert not (tmp_path / "web.parquet.part").exists()


def test_download_with_corrupt_partial_is_rejected_and_cleaned(client: MidmixClient, tmp_path: Path) -> None:
    (tmp_path / "web.parquet.part").write_bytes(b"x" * 5000)
    with pytest.raises(MidmixError, match="did not match its sha256"):
        client.download(VERSION, SHARD, tmp_path / "web.parquet")
    assert not (tmp_path / "web.parquet.part").exists() and not (tmp_path / "web.parquet").exists()


def test_shard_range_request(served) -> None:
    original = shard_path(served).read_bytes()
    url = f"{served[0].url}/mixtures/{VERSION}/phases/stable/shards/web-00000.parquet"
    response = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-199/{len(original)}"
    assert response.content == original[100:200]
    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert (tail.status_code, tail.content) == (206, original[-10:])


def test_unsatisfiable_range_is_416(served) -> None:
    size = shard_path(served).stat().st_size
    url = f"{served[0].url}/mixtures/{VERSION}/phases/stable/shards/web-00000.parquet"
    response = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"


def test_head_gives_length_and_sha_etag_without_body(served) -> None:
    path = shard_path(served)
    response = httpx.head(f"{served[0].url}/mixtures/{VERSION}/files/{SHARD}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(path.stat().st_size)
    assert response.headers["etag"] == f'"{sha256_file(path)}"'
    assert response.content == b""


def test_if_none_match_on_shard_is_304(served) -> None:
    etag = f'"{sha256_file(shard_path(served))}"'
    response = httpx.get(f"{served[0].url}/mixtures/{VERSION}/files/{SHARD}", headers={"If-None-Match": etag})
    assert (response.status_code, response.headers["etag"], response.content) == (304, etag, b"")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/mixtures/{VERSION}/files/..%2F..%2F..%2Fetc%2Fpasswd", 404),
        (f"/mixtures/{VERSION}/files/%2E%2E/%2E%2E/catalog.duckdb", 404),
        (f"/mixtures/{VERSION}/files/spec.json", 404),
        (f"/mixtures/{VERSION}/files/manifest.json", 404),
        ("/mixtures/..%2F..%2Fetc/files/passwd", 404),  # uvicorn decodes %2F: no route matches
        (f"/mixtures/{VERSION}/phases/stable/shards/..%2F..%2Fmanifest.json", 404),
        (f"/mixtures/{VERSION}/phases/stable/shards/..manifest.json", 422),  # not a shard name
        (f"/mixtures/{'m' * 200}/files/{SHARD}", 422),  # longer than any version id
    ],
)
def test_paths_outside_the_manifest_are_not_served(served, path: str, status: int) -> None:
    (served[0].data_dir / "mixtures" / VERSION / "spec.json").write_text("{}")
    with httpx.Client(base_url=served[0].url) as http:
        response = http.send(http.build_request("GET", httpx.URL(served[0].url + path)))
    assert response.status_code == status, response.text
    assert "detail" in response.json()


def _plant_symlinked_shard(data_dir: Path, secret: Path) -> None:
    """A second version whose manifest lists a shard that is a symlink to a file outside the data dir."""
    manifest = write_fixture_mixture(data_dir, SYMLINKED, rows=10)
    secret.write_text("secret")
    shard = data_dir / "mixtures" / SYMLINKED / SHARD
    shard.unlink()
    shard.symlink_to(secret)
    manifest["phases"][0]["components"][0]["shards"][0]["sha256"] = sha256_file(secret)
    (data_dir / "mixtures" / SYMLINKED / "manifest.json").write_text(json.dumps(manifest))


def test_symlinked_shard_pointing_outside_is_not_served(served) -> None:
    response = httpx.get(f"{served[0].url}/mixtures/{SYMLINKED}/files/{SHARD}")
    assert response.status_code == 404
    assert "secret" not in response.text


def test_diff_pages_doc_ids_and_the_client_joins_the_pages(served, client: MidmixClient) -> None:
    url = f"{served[0].url}/mixtures/{VERSION}/diff/{SMALLER}"
    pages = [httpx.get(url, params={"limit": 200}).json()]
    while pages[-1]["next_offset"] is not None:
        pages.append(httpx.get(url, params={"limit": 200, "offset": pages[-1]["next_offset"]}).json())
    removed = [id_ for page in pages for id_ in page["phases"][0]["components"][0]["docs_removed"]]
    web = pages[0]["phases"][0]["components"][0]
    assert [page["offset"] for page in pages] == [0, 200, 400]
    assert (web["name"], web["docs_removed_total"], web["docs_added_total"]) == ("web", 500, 0)
    assert removed == sorted(f"web-{row}" for row in range(2500, 3000))
    joined = client.diff(VERSION, SMALLER, page_size=200)
    assert joined["phases"][0]["components"][0]["docs_removed"] == removed
    assert [len(c["docs_removed"]) for phase in joined["phases"] for c in phase["components"]] == [500, 500, 500]


def test_invalid_spec_names_the_field(served) -> None:
    spec = {
        "name": "bad",
        "phases": [
            {"name": "a", "token_budget": -5, "components": [{"name": "w", "datasets": ["latest"], "weight": 1}]}
        ],
    }
    response = httpx.post(f"{served[0].url}/mixtures/plan", json=spec)
    assert response.status_code == 422
    assert "phases.0.token_budget" in response.json()["detail"]


def test_non_object_body_is_422_not_500(served) -> None:
    response = httpx.post(f"{served[0].url}/mixtures", content=b"[1, 2", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("invalid request: body")


def test_client_gives_up_with_a_clear_error_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(MidmixError, match=f"service at {url} is unreachable after 3 attempts"):
        MidmixClient(url, retries=2, backoff=0.05).health()
    assert time.monotonic() - started < 2


def test_client_rides_out_a_service_that_is_briefly_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_fixture_mixture(data_dir, VERSION, rows=10)
    port = free_port()
    started: list[RunningService] = []
    # The service comes up only after the client's first attempts were refused.
    late_start = threading.Thread(target=lambda: (time.sleep(0.5), started.append(start_service(data_dir, port=port))))
    late_start.start()
    try:
        manifest = MidmixClient(f"http://127.0.0.1:{port}", retries=8, backoff=0.25).manifest(VERSION)
    finally:
        late_start.join()
        for service in started:
            service.stop()
    assert manifest["version"] == VERSION
