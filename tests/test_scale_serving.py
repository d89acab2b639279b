"""Object-store mirrors: push a built mixture to a store, serve it from there (proxy and
redirect), and register a model given by URL. The store is fsspec's in-process ``memory://``,
so the service runs in this process (real uvicorn in a thread on a loopback port)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import httpx
import pytest
import uvicorn
from fsspec.implementations.memory import MemoryFileSystem

from midmix import storage
from midmix.classifiers.registry import ModelRegistry
from midmix.classifiers.train import FastTextParams, LabelledDoc, train_classifier
from midmix.cli import main
from midmix.errors import NotFoundError
from midmix.hashing import sha256_file
from midmix.pipelines.mixtures.build import materialize_mixture
from midmix.pipelines.mixtures.spec import MixtureSpec
from midmix.resources import SAMPLE_CORPUS
from midmix.service.app import create_app
from midmix.service.client import MidmixClient
from midmix.service.settings import ServiceSettings
from tests.sample_dataset import write_sample_dataset
from tests.service_fixtures import free_port, start_service

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

SAMPLE = SAMPLE_CORPUS
SPEC = {"name": "mirror", "phases": [{"name": "stable", "token_budget": 30_000, "components": [
    {"name": "web", "datasets": ["latest"], "weight": 0.6, "select": {"column": "domain", "op": "==", "value": "web"}},
    {"name": "code", "datasets": ["latest"], "weight": 0.4, "select": {"column": "domain", "op": "==", "value": "code"}},
]}]}  # fmt: skip


class SigningMemoryFileSystem(MemoryFileSystem):
    """fsspec's memory store (same bytes as ``memory://``) that signs URLs, as S3 and GCS do.

    The signed URL points at a stdlib HTTP server in this process that serves the stored bytes
    only for the exact signature it issued; it stands in for the cloud store's HTTPS endpoint.
    """

    protocol = ("signedmem",)
    endpoint = ""

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(
            str(path).replace("signedmem://", "memory://", 1)
        )

    def sign(self, path, expiration=100, **kwargs):
        path = self._strip_protocol(path)
        return f"{self.endpoint}{path}?sig={_signature(path)}"


def _signature(path: str) -> str:
    return hashlib.sha256(f"secret:{path}".encode()).hexdigest()[:16]


class _SignedBytes(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        fs = fsspec.filesystem("memory")
        if query != f"sig={_signature(path)}" or not fs.isfile(path):
            self.send_error(403)
            return
        body = fs.cat_file(path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"md5-like-store-etag"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def signing_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SignedBytes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fsspec.register_implementation("signedmem", SigningMemoryFileSystem, clobber=True)
    SigningMemoryFileSystem.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield SigningMemoryFileSystem.endpoint
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    """A real mixture built from the sample corpus: (data dir, manifest)."""
    data_dir = tmp_path_factory.mktemp("built")
    write_sample_dataset(data_dir, SAMPLE, limit=600)
    return data_dir, materialize_mixture(MixtureSpec.model_validate(SPEC), data_dir)


@pytest.fixture(scope="module")
def store(built) -> Iterator[str]:
    """A memory:// store root holding the built version, pushed with the CLI."""
    data_dir, manifest = built
    root = f"memory:///mirror-{uuid.uuid4().hex}"
    assert (
        main(
            ["mixtures", "push", manifest["version"], root, "--data-dir", str(data_dir)]
        )
        == 0
    )
    yield root
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


@contextmanager
def in_process_service(data_dir: Path, **settings: object) -> Iterator[str]:
    """The real app under uvicorn in a thread (memory:// is per process); yields its base URL."""
    port = free_port()
    app = create_app(ServiceSettings(data_dir=data_dir, **settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), (
            "in-process service did not start"
        )
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _version_files(data_dir: Path, version: str) -> dict[str, Path]:
    root = data_dir / "mixtures" / version
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_push_mirrors_every_file_of_the_version(built, store) -> None:
    data_dir, manifest = built
    local = _version_files(data_dir, manifest["version"])
    remote_root = f"{store}/mixtures/{manifest['version']}"
    remote = storage.list_files(remote_root)
    assert remote == sorted(f"{remote_root}/{relative}" for relative in local)
    for relative, path in local.items():
        assert storage.sha256(f"{remote_root}/{relative}") == sha256_file(path)


def test_push_of_an_unknown_version_names_the_published_ones(built, capsys) -> None:
    data_dir, manifest = built
    assert (
        main(
            [
                "mixtures",
                "push",
                "mix-nope",
                "memory:///unused",
                "--data-dir",
                str(data_dir),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no published mixture 'mix-nope'" in err and manifest["version"] in err
    assert not storage.exists("memory:///unused")


def test_service_without_the_version_serves_it_from_the_store_by_proxy(
    built, store, tmp_path
) -> None:
    data_dir, manifest = built
    version = manifest["version"]
    shard = manifest["phases"][0]["components"][0]["shards"][0]
    shard_bytes = (data_dir / "mixtures" / version / shard["path"]).read_bytes()
    with in_process_service(
        tmp_path / "empty", shard_store=store, shard_store_mode="proxy"
    ) as url:
        with MidmixClient(url, retries=0) as client:
            assert [m["version"] for m in client.mixtures()] == [version]
            assert client.manifest(version) == json.loads(
                (data_dir / "mixtures" / version / "manifest.json").read_text()
            )
            assert [s["sha256"] for s in client.shards(version, "stable")] == [
                s["sha256"]
                for c in manifest["phases"][0]["components"]
                for s in c["shards"]
            ]
            listed = {
                s["path"]: s["sha256"]
                for c in manifest["phases"][0]["components"]
                for s in c["shards"]
            }
            listed |= {
                entry["path"]: entry["sha256"]
                for entry in (manifest.get("eval") or {}).values()
            }
            assert len(listed) == 2
            for relative, digest in listed.items():
                assert (
                    sha256_file(
                        client.download(version, relative, tmp_path / "dl" / relative)
                    )
                    == digest
                )
            with pytest.raises(NotFoundError, match="lists no file 'manifest.json'"):
                client.download(version, "manifest.json", tmp_path / "dl" / "m.json")

        file_url = f"{url}/mixtures/{version}/files/{shard['path']}"
        ranged = httpx.get(file_url, headers={"Range": "bytes=10-99"})
        assert ranged.status_code == 206 and ranged.content == shard_bytes[10:100]
        assert ranged.headers["content-range"] == f"bytes 10-99/{len(shard_bytes)}"
        assert ranged.headers["etag"] == f'"{shard["sha256"]}"'
        suffix = httpx.get(file_url, headers={"Range": "bytes=-7"})
        assert suffix.status_code == 206 and suffix.content == shard_bytes[-7:]
        stale = httpx.get(
            file_url, headers={"Range": "bytes=10-99", "If-Range": '"other"'}
        )
        assert stale.status_code == 200 and stale.content == shard_bytes
        assert (
            httpx.get(
                file_url, headers={"Range": f"bytes={len(shard_bytes)}-"}
            ).status_code
            == 416
        )
        head = httpx.head(file_url)
        assert (
            head.status_code == 200
            and head.content == b""
            and head.headers["content-length"] == str(len(shard_bytes))
        )
        assert (
            httpx.get(
                file_url, headers={"If-None-Match": f'"{shard["sha256"]}"'}
            ).status_code
            == 304
        )
        shard_route = f"{url}/mixtures/{version}/phases/stable/shards/{shard['path'].rsplit('/', 1)[1]}"
        assert httpx.get(shard_route).content == shard_bytes
        assert httpx.get(f"{url}/mixtures/mix-absent").status_code == 404
        for local_only in (f"/mixtures/{version}/composition", f"/mixtures/{version}/diff/{version}"):
            answer = httpx.get(f"{url}{local_only}")
            assert answer.status_code == 400 and "only in the shard store" in answer.json()["detail"]


def test_cross_process_service_reads_a_file_url_store_from_the_environment(built, tmp_path) -> None:
    data_dir, manifest = built
    version = manifest["version"]
    store = f"file://{tmp_path / 'bucket'}"
    assert main(["mixtures", "push", version, store, "--data-dir", str(data_dir)]) == 0
    (tmp_path / "empty").mkdir()
    service = start_service(tmp_path / "empty", env={"MIDMIX_SHARD_STORE": store, "MIDMIX_SHARD_STORE_MODE": "proxy"})
    try:
        with MidmixClient(service.url, retries=0) as client:
            shard = client.shards(version, "stable")[1]
            path = client.download(version, shard["path"], tmp_path / "dl.parquet")
        assert sha256_file(path) == shard["sha256"]
        assert path.read_bytes() == (data_dir / "mixtures" / version / shard["path"]).read_bytes()
    finally:
        service.stop()


def test_redirect_mode_sends_downloads_to_a_signed_url(
    built, store, signing_endpoint, tmp_path
) -> None:
    _, manifest = built
    version = manifest["version"]
    shard = manifest["phases"][0]["components"][1]["shards"][0]
    signing_store = store.replace("memory://", "signedmem://", 1)
    with in_process_service(tmp_path / "empty", shard_store=signing_store) as url:
        answer = httpx.get(f"{url}/mixtures/{version}/files/{shard['path']}")
        assert (
            answer.status_code == 307
            and answer.headers["etag"] == f'"{shard["sha256"]}"'
        )
        assert answer.headers["location"].startswith(f"{signing_endpoint}/mirror-")
        with MidmixClient(url, token="read-token", retries=0) as client:
            path = client.download(version, shard["path"], tmp_path / "dl.parquet")
        assert sha256_file(path) == shard["sha256"]
    with in_process_service(
        tmp_path / "empty", shard_store=signing_store, shard_store_mode="proxy"
    ) as url:
        proxied = httpx.get(f"{url}/mixtures/{version}/files/{shard['path']}")
        assert (
            proxied.status_code == 200
            and hashlib.sha256(proxied.content).hexdigest() == shard["sha256"]
        )
    # memory:// cannot sign: redirect mode falls back to streaming the bytes.
    with in_process_service(tmp_path / "empty", shard_store=store) as url:
        assert (
            httpx.get(f"{url}/mixtures/{version}/files/{shard['path']}").status_code
            == 200
        )


def test_local_versions_still_win_over_the_store(built, store) -> None:
    data_dir, manifest = built
    shard = manifest["phases"][0]["components"][0]["shards"][0]
    with in_process_service(data_dir, shard_store=store) as url:
        assert [m["version"] for m in httpx.get(f"{url}/mixtures").json()] == [
            manifest["version"]
        ]
        answer = httpx.get(
            f"{url}/mixtures/{manifest['version']}/files/{shard['path']}"
        )
        assert (
            answer.status_code == 200
            and answer.headers["etag"] == f'"{shard["sha256"]}"'
        )


def test_model_from_a_memory_url_registers_under_its_content_hash(tmp_path) -> None:
    docs = [
        LabelledDoc(f"apple orchard red apple {i}", "apple", f"a{i}") for i in range(30)
    ]
    docs += [
        LabelledDoc(f"banana yellow peel {i}", "banana", f"b{i}") for i in range(30)
    ]
    params = FastTextParams(epoch=5, dim=8, bucket=0, wordNgrams=1)
    local, _ = train_classifier(
        docs, name="fruit", task="t", params=params, out_path=tmp_path / "fruit.bin"
    )
    url = f"memory:///models-{uuid.uuid4().hex}/fruit.bin"
    with storage.open_file(url, "wb") as handle:
        handle.write(local.read_bytes())
    registry = ModelRegistry(tmp_path / "models")
    card = registry.card(url)
    assert (
        card.sha256 == sha256_file(local)
        and card.name == "fruit"
        and card.labels == ["apple", "banana"]
    )
    assert registry.path(url) == tmp_path / "models" / f"{card.sha256}.bin"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        f"{card.sha256}.bin",
        f"{card.sha256}.json",
    ]
    with pytest.raises(NotFoundError, match="no file at memory:///absent/m.bin"):
        registry.card("memory:///absent/m.bin")
