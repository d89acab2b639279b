"""Publication of one version from several processes at once (``midmix.publish.publishing``): the
builds take turns under a per-version lock, each in a staging directory of its own, the version
appears once and whole, a failed build leaves nothing behind, and a killed build's leftovers go
with the next build of the version."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from midmix.errors import MidmixError
from midmix.publish import STAGING_DIR, publishing


def _publish_slowly(final: str, writer: str, spans: multiprocessing.Queue) -> None:
    """Stage three files a tenth of a second apart, then publish; report when this build held the lock."""
    with publishing(Path(final)) as staging:
        started = time.monotonic()
        for index in range(3):
            (staging / f"part-{index}").write_text(writer)
            time.sleep(0.1)
        (staging / "manifest.json").write_text(json.dumps({"writer": writer, "staging": staging.name}))
        spans.put((writer, started, time.monotonic()))


@pytest.mark.slow
def test_concurrent_builds_of_one_version_take_turns_and_publish_it_once(tmp_path: Path) -> None:
    final = tmp_path / "mixtures" / "mix-0000000000000001"
    context = multiprocessing.get_context("spawn")
    spans = context.Queue()
    builds = [context.Process(target=_publish_slowly, args=(str(final), f"w{n}", spans)) for n in range(3)]
    for build in builds:
        build.start()
    for build in builds:
        build.join(timeout=60)
    held = sorted(spans.get(timeout=5) for _ in builds)
    windows = sorted((start, end) for _, start, end in held)
    published = json.loads((final / "manifest.json").read_text())
    assert [build.exitcode for build in builds] == [0, 0, 0]
    assert all(later[0] >= earlier[1] for earlier, later in zip(windows, windows[1:])), "two builds held the lock"
    assert {(final / f"part-{n}").read_text() for n in range(3)} == {published["writer"]}  # one build's files only
    assert list((final.parent / STAGING_DIR).iterdir()) == []  # no staging left, no lock file left


def test_a_failed_build_leaves_no_staging_and_a_full_disk_is_one_line(tmp_path: Path) -> None:
    final = tmp_path / "datasets" / "ds-0000000000000001"
    with pytest.raises(ValueError):
        with publishing(final) as staging:
            (staging / "part").write_text("half")
            raise ValueError("the build failed")
    with pytest.raises(
        MidmixError, match=r"^no space left on the device holding .* while publishing ds-0000000000000001"
    ):
        with publishing(final):
            raise OSError(28, "No space left on device")
    assert not final.exists()
    assert list((final.parent / STAGING_DIR).iterdir()) == []


def _killed_mid_build(final: str) -> None:
    with publishing(Path(final)) as staging:
        (staging / "part").write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_builds_staging_goes_with_the_next_build_of_the_version(tmp_path: Path) -> None:
    final = tmp_path / "mixtures" / "mix-0000000000000002"
    killed = multiprocessing.get_context("spawn").Process(target=_killed_mid_build, args=(str(final),))
    killed.start()
    killed.join(timeout=60)
    leftovers = sorted(path.name for path in (final.parent / STAGING_DIR).iterdir())
    with publishing(final) as staging:
        (staging / "manifest.json").write_text("{}")
    assert killed.exitcode == -signal.SIGKILL
    assert [name for name in leftovers if not name.endswith(".lock")][0].startswith(f"{final.name}.")
    assert (final / "manifest.json").read_text() == "{}" and not (final / "part").exists()
    assert list((final.parent / STAGING_DIR).iterdir()) == []
