"""Test-only start-up hook: slow mixture builds down so crash and cancel tests can stop one mid-way.

A test puts this folder on ``PYTHONPATH`` and sets ``MIDMIX_TEST_SLOW_BUILD=SECONDS`` for a
subprocess (``midmix build``, ``midmix serve`` and its job workers); Python imports
``sitecustomize`` at start-up, and this one makes every shard write pause that long afterwards.
Production code knows nothing of it.
"""

import os

_SECONDS = float(os.environ.get("MIDMIX_TEST_SLOW_BUILD") or 0)

if _SECONDS > 0:
    import time

    from midmix.pipelines.mixtures import shards

    _write_shard = shards.write_shard

    def _slow_write_shard(*args, **kwargs):
        written = _write_shard(*args, **kwargs)
        time.sleep(_SECONDS)
        return written

    shards.write_shard = _slow_write_shard
