"""Checkpoints that resume a run exactly: model, optimizer, schedule and data position, RNG states.

One file per checkpoint, ``step-00000012.pt``, written to a temporary name in the same directory,
fsynced and renamed, so a run killed mid-write leaves the previous checkpoint intact. The data
position is the phase and the next global step within it: the phase stream's order depends on the
manifest alone, so that small dict is all a resume (even with another world size) needs.

Rank 0 writes; every rank reads the newest file on resume, so a multi-node run needs the
checkpoint directory on a filesystem all nodes share.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midmix.errors import MidmixError
from midmix.publish import atomic_path

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_path(directory: Path, global_step: int) -> Path:
    """Where the checkpoint taken after ``global_step`` optimizer steps lives."""
    return directory / f"step-{global_step:08d}.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG the run touches, so a resumed run draws the same numbers."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states recorded by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, global_step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``global_step``; keep only the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, global_step)
    with atomic_path(final) as temporary, open(temporary, "wb") as handle:
        torch.save(state, handle)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary files are ignored)."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if _NAME.match(path.name))


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None when the directory holds none."""
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        return None
    try:
        return torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as error:
        raise MidmixError(
            f"checkpoint {checkpoints[-1]} cannot be read ({error}); delete it to resume from the one before"
        ) from error
