"""The progress protocol every long-running stage reports through.

Curation, mixture builds, default-model training and service jobs call the same callback with
``(step name, units done, units total or None)``; the CLI draws bars from it and the service's
job worker writes it to the job record.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TextIO

ProgressCallback = Callable[[str, int, "int | None"], None]


class ProgressBars:
    """A ``ProgressCallback`` for the terminal: one tqdm bar per step, closed by ``close``.

    ``stream`` defaults to a duplicate of stderr, so bars survive code that redirects logging
    (datatrove sends its logs to files while a curation runs).
    """

    def __init__(self, unit: str = "doc", stream: TextIO | None = None) -> None:
        self.unit = unit
        self.stream = stream or os.fdopen(os.dup(2), "w", buffering=1)
        self._owns_stream = stream is None
        self.bars: dict[str, Any] = {}

    def __call__(self, step: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        bar = self.bars.get(step)
        if bar is None:
            bar = self.bars[step] = tqdm(desc=step, total=total, unit=self.unit, file=self.stream, leave=True)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        """Finish every bar (and the duplicated stream)."""
        for bar in self.bars.values():
            bar.close()
        if self._owns_stream:
            self.stream.close()

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
