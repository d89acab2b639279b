"""Test-only start-up hook: slow builds and curations down so crash and cancel tests can stop one mid-way.

A test puts this folder on ``PYTHONPATH`` and sets, for a subprocess (``midmix build``,
``midmix serve`` and its job workers):

- ``MIDMIX_TEST_SLOW_BUILD=SECONDS``: every mixture shard write pauses that long afterwards;
- ``MIDMIX_TEST_SLOW_CURATION=SECONDS``: a curation pauses that long before it publishes (its
  first three stages are done, their work files on disk, nothing published).

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

    from midmix.pipelines.curation import curate

    _publish = curate.PublishDataset.run

    def _slow_publish(self, data=None, rank: int = 0, world_size: int = 1):
        time.sleep(_CURATION_S)
        return _publish(self, data, rank, world_size)

    curate.PublishDataset.run = _slow_publish
