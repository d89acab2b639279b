"""Run one fastText training in a fresh interpreter (``python -m midmix.classifiers.fit REQUEST``).

Why: training in this fastText build reads uninitialised heap memory. Identical inputs then
give different models, or "Encountered NaN", depending on what the heap held before (small
models and repeated calls in one process are hit most). Starting the trainer with glibc's
``MALLOC_PERTURB_=255`` makes every allocation zero-filled, which makes training reproducible
byte for byte; glibc reads that variable only at process start, hence the subprocess. A
subprocess, unlike multiprocessing's spawn, never re-imports the caller's ``__main__``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from midmix.errors import MidmixError


def fit_in_subprocess(train_file: Path, params: dict[str, Any], out_path: Path) -> None:
    """Train a supervised model from a fastText-format file and save it to ``out_path``."""
    request = json.dumps({"input": str(train_file), "params": params, "output": str(out_path)})
    # Perturb byte 255: glibc fills each new allocation with 255 ^ 0xff = 0.
    env = {**os.environ, "MALLOC_PERTURB_": "255"}
    done = subprocess.run(
        [sys.executable, "-m", "midmix.classifiers.fit", request], capture_output=True, text=True, check=False, env=env
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise MidmixError(f"fastText training failed: {reason}; change the params (for example lower lr)")


def main(argv: list[str]) -> int:
    """Child side: train with ``thread=1`` (reproducible updates) and save the model."""
    import fasttext

    request = json.loads(argv[0])
    native = fasttext.train_supervised(input=request["input"], thread=1, verbose=0, **request["params"])
    native.save_model(request["output"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
