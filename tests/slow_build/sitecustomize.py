"""Test-only start-up hook: slow builds and curations down so crash and cancel tests can stop one mid-way.

A test puts this folder on ``PYTHONPATH`` and sets, for a subprocess (``midmix build``,
``midmix serve`` and its job workers):

- ``MIDMIX_TEST_SLOW_BUILD=SECONDS``: every mixture shard write pauses that long afterwards;
- ``MIDMIX_TEST_SLOW_CURATION=SECONDS``: each task of a curation's third stage (writing the
  curated parts) pauses that long first: annotation and dedup are done, nothing is published.

Python imports ``sitecustomize`` at start-up. Production code knows nothing of it.
"""

import os

_BUILD_S = float(os.environ.get("MIDMIX_TEST_SLOW_BUILD") or 0)
_CURATION_S = float(os.environ.get("MIDMIX_TEST_SLOW_CURATION") or 0)

if _BUILD_S > 0:
    import time

    from midmix.pipelines.mixtures import shards

    _write_shard = shards.write_shard

    def _slow_write_shard(*args, **kwargs):
        written = _write_shard(*args, **kwargs)
        time.sleep(_BUILD_S)
        return written

    shards.write_shard = _slow_write_shard

if _CURATION_S > 0:
    import time

    from midmix.pipelines.curation import writer

    _write = writer.CuratedWriter.run

    def _slow_write(self, data=None, rank: int = 0, world_size: int = 1):
        time.sleep(_CURATION_S)
        return _write(self, data, rank, world_size)

    writer.CuratedWriter.run = _slow_write
