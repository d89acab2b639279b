"""ShardCache against a real `midmix serve`: verified downloads, refetch of bad files, LRU cap, prefetch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from midmix.errors import MidmixError
from midmix.hashing import sha256_file
from midmix.service.client import MidmixClient
from midmix.trainer.shard_cache import ShardCache, decoded_shard
from tests.service_fixtures import free_port, start_service, write_fixture_mixture

pytestmark = pytest.mark.slow  # starts processes (services, workers, torchrun, Ray, a browser)

VERSION = "mix-00000000000000cc"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    manifest = write_fixture_mixture(data_dir, VERSION, rows=300)
    service = start_service(data_dir)
    yield service, manifest
    service.stop()


@pytest.fixture
def client(served):
    with MidmixClient(served[0].url, retries=1, backoff=0.01) as client:
        yield client


def _shards(manifest: dict) -> list[dict]:
    return [shard for phase in manifest["phases"] for component in phase["components"] for shard in component["shards"]]


def _cache(client, tmp_path: Path, max_bytes: int = 10**9) -> ShardCache:
    return ShardCache(client, VERSION, tmp_path / "cache", max_bytes)


def test_local_path_is_the_verified_file_and_is_not_fetched_twice(served, client, tmp_path):
    entry = _shards(served[1])[0]
    cache = _cache(client, tmp_path)
    path = cache.local_path(entry)
    assert path == tmp_path / "cache" / VERSION / entry["path"]
    assert sha256_file(path) == entry["sha256"]
    inode = path.stat().st_ino
    assert cache.local_path(entry).stat().st_ino == inode


def test_a_corrupted_cached_file_is_deleted_and_fetched_again(served, client, tmp_path):
    entry = _shards(served[1])[0]
    path = _cache(client, tmp_path).local_path(entry)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = _cache(client, tmp_path).local_path(entry)  # a new run: verifies the sha256 once
    assert sha256_file(again) == entry["sha256"]


def test_a_truncated_cached_file_is_fetched_again_even_after_verification(served, client, tmp_path):
    entry = _shards(served[1])[1]
    cache = _cache(client, tmp_path)
    path = cache.local_path(entry)
    os.truncate(path, entry["bytes"] // 2)
    assert sha256_file(cache.local_path(entry)) == entry["sha256"]


def test_a_corrupt_served_file_raises_after_bounded_retries(served, client, tmp_path):
    service, manifest = served
    entry = _shards(manifest)[2]
    source = service.data_dir / "mixtures" / VERSION / entry["path"]
    good = source.read_bytes()
    source.write_bytes(good[:-10] + b"0123456789")
    try:
        with pytest.raises(MidmixError, match="failed after 3 downloads: .* did not match its sha256"):
            _cache(client, tmp_path).local_path(entry)
    finally:
        source.write_bytes(good)
    assert not (tmp_path / "cache" / VERSION / entry["path"]).exists()


def test_eviction_keeps_the_cap_and_never_removes_files_in_use(served, client, tmp_path):
    a, b, c = _shards(served[1])
    cap = a["bytes"] + b["bytes"] + c["bytes"] // 2
    cache = _cache(client, tmp_path, max_bytes=cap)
    path_a, path_b = cache.local_path(a), cache.local_path(b)
    cache.release([a, b])
    os.utime(path_a, ns=(1, 1))  # a is the least recently used
    path_c = cache.local_path(c)
    assert not path_a.exists() and path_b.exists() and path_c.exists()
    cache.local_path(b)
    assert cache.local_path(a).exists()  # b and c are in use: the cap is exceeded rather than break a reader
    assert path_b.exists() and path_c.exists()


def test_decoded_data_counts_against_the_cap_and_held_files_are_never_evicted(served, client, tmp_path):
    """The training stream's decoded shards live in the cache folder: reserve() evicts them like
    downloads (least recently used first) unless the running phase holds them."""
    import pyarrow.parquet as pq

    a, b, _ = _shards(served[1])
    cache = _cache(client, tmp_path, max_bytes=10**9)
    decoded = {}
    for entry in (a, b):
        path = cache.local_path(entry)
        n_tokens = pq.read_table(path, columns=["n_tokens"]).column(0).to_numpy()
        decoded_shard(path, entry["sha256"], n_tokens, cache.decoded_dir)
        decoded[entry["sha256"]] = sorted(cache.decoded_dir.glob(f"{entry['sha256']}.*.npy"))
    assert all(len(files) == 2 for files in decoded.values())
    cache.release([a, b])
    cache.hold([a["sha256"]])
    used = sum(p.stat().st_size for p in cache.cache_dir.rglob("*") if p.is_file() and p.suffix != ".lock")
    cache.max_bytes = used  # full: the next reservation must evict
    cache.reserve(used)
    assert all(path.exists() for path in decoded[a["sha256"]])  # held by the phase
    assert not any(path.exists() for path in decoded[b["sha256"]])
    assert not cache._path_of(a).exists() and not cache._path_of(b).exists()  # released downloads go too
    cache.release_held([a["sha256"]])
    cache.reserve(used)
    assert not any(path.exists() for path in decoded[a["sha256"]])


def test_prefetch_fills_free_room_only(served, client, tmp_path):
    a, b, c = _shards(served[1])
    cache = _cache(client, tmp_path, max_bytes=a["bytes"] + b["bytes"] + c["bytes"] // 2)
    fetched = cache.prefetch([a, b, c]).result(timeout=60)
    assert fetched == [cache.local_path(a), cache.local_path(b)]
    assert not (tmp_path / "cache" / VERSION / c["path"]).exists()
    cache.close()


def test_manifest_and_cached_files_need_no_service(served, client, tmp_path):
    entry = _shards(served[1])[0]
    cache = _cache(client, tmp_path)
    assert cache.manifest() == served[1]
    cache.local_path(entry)
    with MidmixClient(f"http://127.0.0.1:{free_port()}", retries=0) as offline:
        restarted = _cache(offline, tmp_path)
        assert restarted.manifest() == served[1]
        assert sha256_file(restarted.local_path(entry)) == entry["sha256"]
        with pytest.raises(MidmixError, match="unreachable"):
            restarted.local_path(_shards(served[1])[1])


def test_paths_escaping_the_version_are_refused(client, tmp_path):
    with pytest.raises(MidmixError, match="must be relative and inside the version"):
        _cache(client, tmp_path).local_path({"path": "../other/x.parquet", "sha256": "0", "bytes": 1})


def test_close_stops_prefetch_before_the_next_file(served, client, tmp_path):
    cache = _cache(client, tmp_path)
    cache.close()
    assert cache.prefetch(_shards(served[1])).result(timeout=60) == []
