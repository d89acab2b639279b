"""The DuckDB catalog: datasets, per-document statistics and mixture versions, for planning and browsing.

Rebuildable from the published manifests (``datasets/*/manifest.json``, ``mixtures/*/manifest.json``);
staging directories are never read. DuckDB allows one writer process at a time and no readers
beside it, so every operation opens a short-lived connection (read-only where it only reads)
and retries briefly while another process holds the lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import duckdb

from midmix.errors import ConflictError, NotFoundError
from midmix.pipelines.curation.schema import SIGNAL_COLUMNS

CATALOG_FILE = "catalog.duckdb"
SCHEMA_VERSION = 2
"""Bump when the tables change: an older catalog is dropped and rebuilt from the manifests."""
_TABLES = ("meta", "datasets", "docs", "mixtures", "phases", "components", "shards")
LOCK_RETRY_SECONDS = 30.0

DOC_COLUMNS = (
    "source", "lang", "lang_score", "domain", "domain_scores", "quality", "quality_score",
    *SIGNAL_COLUMNS, "dup_cluster_size", "n_chars", "n_tokens",
)  # fmt: skip

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (schema_version INTEGER);
CREATE TABLE IF NOT EXISTS datasets (
    version VARCHAR PRIMARY KEY, published_at DOUBLE, docs BIGINT, tokens BIGINT,
    quality_names VARCHAR[], manifest JSON);
CREATE TABLE IF NOT EXISTS docs (
    dataset VARCHAR, file VARCHAR, row_index BIGINT, id VARCHAR, id_key UBIGINT,
    source VARCHAR, lang VARCHAR, lang_score FLOAT, domain VARCHAR,
    domain_scores MAP(VARCHAR, FLOAT), quality MAP(VARCHAR, FLOAT), quality_score FLOAT,
    {", ".join(f"{name} FLOAT" for name in SIGNAL_COLUMNS)},
    dup_cluster_size INTEGER, n_chars INTEGER, n_tokens INTEGER);
CREATE TABLE IF NOT EXISTS mixtures (
    version VARCHAR PRIMARY KEY, name VARCHAR, published_at DOUBLE, tokens BIGINT, manifest JSON);
CREATE TABLE IF NOT EXISTS phases (
    mixture VARCHAR, phase VARCHAR, idx INTEGER, token_budget BIGINT, tokens BIGINT, docs BIGINT,
    seq_len INTEGER, rope_theta DOUBLE);
CREATE TABLE IF NOT EXISTS components (
    mixture VARCHAR, phase VARCHAR, component VARCHAR, weight DOUBLE, target_tokens BIGINT,
    realized_tokens BIGINT, docs BIGINT, unique_docs BIGINT, epochs DOUBLE, general BOOLEAN);
CREATE TABLE IF NOT EXISTS shards (
    mixture VARCHAR, phase VARCHAR, component VARCHAR, path VARCHAR, sha256 VARCHAR,
    bytes BIGINT, rows BIGINT, tokens BIGINT);
"""


class Catalog:
    """Catalog over ``DATA/catalog.duckdb``; reads resync first when published versions changed."""

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / CATALOG_FILE
        self._reader: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop a held read connection (see ``reading``)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- connections -------------------------------------------------------------------------

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                # Another process holds the write lock, or this process has the file open in the
                # other mode (read-only vs read-write): both clear when that connection closes.
                message = str(error).lower()
                busy = "lock" in message or "different configuration" in message
                if not busy or time.monotonic() > deadline:
                    raise ConflictError(f"catalog {self.path} is busy: {error}") from error
                time.sleep(0.05)

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One read-only connection for a batch of queries (nested calls share it)."""
        if self._reader is not None:
            yield self._reader
            return
        self._reader = self._fresh_reader()
        try:
            yield self._reader
        finally:
            self.close()

    def _published(self, kind: str) -> dict[str, Path]:
        root = self.data_dir / kind
        if not root.is_dir():
            return {}
        return {d.name: d for d in sorted(root.iterdir()) if (d / "manifest.json").is_file() and not d.name.startswith(".")}

    def _fresh_reader(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to a catalog that lists exactly the published versions (syncing first if not)."""
        if self.path.exists():
            con = self._connect(read_only=True)
            if self._is_fresh(con):
                return con
            con.close()
        self.sync()
        return self._connect(read_only=True)

    def _is_fresh(self, con: duckdb.DuckDBPyConnection) -> bool:
        if _schema_version(con) != SCHEMA_VERSION:
            return False
        datasets = {row[0] for row in con.execute("SELECT version FROM datasets").fetchall()}
        mixtures = {row[0] for row in con.execute("SELECT version FROM mixtures").fetchall()}
        return datasets == set(self._published("datasets")) and mixtures == set(self._published("mixtures"))

    # -- writing -----------------------------------------------------------------------------

    def sync(self) -> None:
        """Upsert every published dataset and mixture manifest; forget versions whose directory is gone."""
        self.close()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._connect(read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            if _schema_version(con) != SCHEMA_VERSION:
                for table in _TABLES:
                    con.execute(f"DROP TABLE IF EXISTS {table}")
                con.execute(_SCHEMA)
                con.execute("INSERT INTO meta VALUES (?)", [SCHEMA_VERSION])
            self._sync_datasets(con)
            self._sync_mixtures(con)
            con.execute("COMMIT")

    def _sync_datasets(self, con: duckdb.DuckDBPyConnection) -> None:
        published = self._published("datasets")
        known = {row[0] for row in con.execute("SELECT version FROM datasets").fetchall()}
        for version in known - set(published):
            con.execute("DELETE FROM docs WHERE dataset = ?", [version])
            con.execute("DELETE FROM datasets WHERE version = ?", [version])
        for version in sorted(set(published) - known):
            self._insert_dataset(con, version, published[version])

    def _insert_dataset(self, con: duckdb.DuckDBPyConnection, version: str, directory: Path) -> None:
        manifest_path = directory / "manifest.json"
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for entry in manifest.get("files", []):
            if not entry["path"].startswith("data/"):
                continue
            con.execute(
                f"""INSERT INTO docs SELECT ?, ?, file_row_number, id, md5_number_lower(id), {", ".join(DOC_COLUMNS)}
                    FROM read_parquet(?, file_row_number = true)""",
                [version, entry["path"], str(directory / entry["path"])],
            )
        docs, tokens = con.execute(
            "SELECT count(*), coalesce(sum(n_tokens), 0) FROM docs WHERE dataset = ?", [version]
        ).fetchall()[0]
        names = con.execute(
            "SELECT list(DISTINCT k ORDER BY k) FROM (SELECT unnest(map_keys(quality)) AS k FROM docs WHERE dataset = ?)",
            [version],
        ).fetchall()[0][0]
        con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
            [version, manifest_path.stat().st_mtime, docs, tokens, names or [], json.dumps(manifest)],
        )

    def _sync_mixtures(self, con: duckdb.DuckDBPyConnection) -> None:
        published = self._published("mixtures")
        known = {row[0] for row in con.execute("SELECT version FROM mixtures").fetchall()}
        for version in known - set(published):
            for table in ("phases", "components", "shards"):
                con.execute(f"DELETE FROM {table} WHERE mixture = ?", [version])
            con.execute("DELETE FROM mixtures WHERE version = ?", [version])
        for version in sorted(set(published) - known):
            self._insert_mixture(con, version, published[version] / "manifest.json")

    @staticmethod
    def _insert_mixture(con: duckdb.DuckDBPyConnection, version: str, manifest_path: Path) -> None:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        phases = manifest.get("phases", [])
        con.execute(
            "INSERT INTO mixtures VALUES (?, ?, ?, ?, ?)",
            [version, manifest.get("name"), manifest_path.stat().st_mtime,
             sum(p.get("tokens", 0) for p in phases), json.dumps(manifest)],
        )  # fmt: skip
        for phase in phases:
            con.execute(
                "INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [version, phase["name"], phase["index"], phase["token_budget"], phase["tokens"], phase["docs"],
                 phase["seq_len"], phase["rope_theta"]],
            )  # fmt: skip
            for c in phase["components"]:
                con.execute(
                    "INSERT INTO components VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [version, phase["name"], c["name"], c["weight"], c["target_tokens"], c["realized_tokens"],
                     c["docs"], c["unique_docs"], c["epochs"], c["general"]],
                )  # fmt: skip
                for s in c["shards"]:
                    con.execute(
                        "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [version, phase["name"], c["name"], s["path"], s["sha256"], s["bytes"], s["rows"], s["tokens"]],
                    )

    # -- reading -----------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        """Published curated datasets, newest first: version, docs, tokens, quality classifier names."""
        with self.reading() as con:
            rows = con.execute(
                "SELECT version, published_at, docs, tokens, quality_names FROM datasets ORDER BY published_at DESC, version"
            ).fetchall()
        keys = ("version", "published_at", "docs", "tokens", "quality_names")
        return [dict(zip(keys, row)) for row in rows]

    def dataset(self, version: str) -> dict[str, Any]:
        """One dataset's manifest; NotFoundError names the versions that exist."""
        with self.reading() as con:
            rows = con.execute("SELECT manifest FROM datasets WHERE version = ?", [version]).fetchall()
        if not rows:
            raise NotFoundError(f"dataset version '{version}' not found; known: {self._known('datasets')}")
        return json.loads(rows[0][0])

    def resolve_dataset(self, ref: str) -> str:
        """A concrete dataset version for ``ref``; "latest" is the most recently published one."""
        if ref == "latest":
            found = self.datasets()
            if not found:
                raise NotFoundError("no curated dataset is published yet; run `midmix curate` first")
            return found[0]["version"]
        self.dataset(ref)
        return ref

    def mixtures(self) -> list[dict[str, Any]]:
        """Published mixture versions, newest first: version, name, phases, tokens."""
        with self.reading() as con:
            rows = con.execute(
                """SELECT m.version, m.name, m.published_at, m.tokens, list(p.phase ORDER BY p.idx)
                   FROM mixtures m LEFT JOIN phases p ON p.mixture = m.version
                   GROUP BY ALL ORDER BY m.published_at DESC, m.version"""
            ).fetchall()
        keys = ("version", "name", "published_at", "tokens", "phases")
        return [dict(zip(keys, row)) for row in rows]

    def mixture(self, version: str) -> dict[str, Any]:
        """One mixture version's manifest; NotFoundError names the versions that exist."""
        with self.reading() as con:
            rows = con.execute("SELECT manifest FROM mixtures WHERE version = ?", [version]).fetchall()
        if not rows:
            raise NotFoundError(f"mixture version '{version}' not found; known: {self._known('mixtures')}")
        return json.loads(rows[0][0])

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """Per phase and component differences between two published mixture versions."""
        from midmix.pipelines.mixtures.diff import diff_mixtures

        return diff_mixtures(self.mixture(a), self.mixture(b), self.data_dir)

    def _known(self, table: str) -> str:
        with self.reading() as con:
            names = [row[0] for row in con.execute(f"SELECT version FROM {table} ORDER BY version").fetchall()]
        return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "none"


def _schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The catalog's table layout version; None for an empty or pre-versioning catalog."""
    has_meta = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta'").fetchall()[0][0]
    if not has_meta:
        return None
    return con.execute("SELECT max(schema_version) FROM meta").fetchall()[0][0]
