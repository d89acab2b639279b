"""Component weights that change over a phase: the contract between a mixture spec, its manifest and the trainer.

A spec gives a component's ``weight`` as a number or as a schedule over the phase's progress
``x`` in [0, 1] (the fraction of the phase's tokens trained so far), linear between points or
stepwise (the request in Megatron-Energon #17; Marin's varying mixtures). A phase's schedules are
brought onto the union of all their breakpoints as *segments*: on ``[start, end)`` each
component's weight goes linearly from ``begin`` to ``finish`` (a step is a segment with
``begin == finish``). The weights must sum to 1 at both ends of every segment, so they sum to 1
everywhere. The planner asks each component for ``budget x integral`` tokens; the manifest carries
the segments; the trainer blends sequences so that the tokens trained so far follow the
cumulative integral (``trainer/blend.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ScheduleShape = Literal["linear", "step"]
SUM_TOLERANCE = 1e-6


class WeightSchedule(BaseModel):
    """A component weight over its phase: ``points`` are ``[at, weight]`` with ``at`` from 0 up to at most 1.

    ``linear`` interpolates between points, ``step`` holds each weight until the next point; both
    hold the last weight to the end of the phase.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: ScheduleShape = "linear"
    points: list[tuple[float, float]] = Field(min_length=1)

    @model_validator(mode="after")
    def _points_are_ordered(self) -> WeightSchedule:
        at = [point[0] for point in self.points]
        if at[0] != 0:
            raise ValueError(f"a schedule's first point must be at 0 (the phase's start), got {at[0]:g}")
        if any(later <= earlier for earlier, later in zip(at, at[1:])) or at[-1] > 1:
            raise ValueError(f"schedule points must be at strictly increasing fractions of the phase in [0, 1], got {at}")
        for _, weight in self.points:
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"schedule weights must be finite numbers >= 0, got {weight}")
        return self


Weight = float | WeightSchedule


@dataclass(frozen=True)
class Segment:
    """On ``[start, end)`` of the phase, the weight goes linearly from ``begin`` to ``finish``."""

    start: float
    end: float
    begin: float
    finish: float

    def integral(self) -> float:
        """This segment's share of the phase's tokens."""
        return (self.end - self.start) * (self.begin + self.finish) / 2

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "from": self.begin, "to": self.finish}

    @classmethod
    def from_json(cls, data: dict) -> Segment:
        return cls(float(data["start"]), float(data["end"]), float(data["from"]), float(data["to"]))


def is_scheduled(weights: list[Weight]) -> bool:
    """Whether any component's weight changes over the phase."""
    return any(isinstance(weight, WeightSchedule) for weight in weights)


def breakpoints(weights: list[Weight]) -> list[float]:
    """0, every schedule point inside the phase, and 1."""
    inner = {at for weight in weights if isinstance(weight, WeightSchedule) for at, _ in weight.points}
    return sorted(inner | {0.0, 1.0})


def phase_segments(weights: list[Weight]) -> list[list[Segment]]:
    """Each component's weight as segments over the union of the phase's breakpoints (not yet normalised)."""
    edges = breakpoints(weights)
    spans = list(zip(edges, edges[1:]))
    return [[Segment(start, end, _value(weight, start, False), _value(weight, end, True)) for start, end in spans]
            for weight in weights]  # fmt: skip


def integral(segments: list[Segment]) -> float:
    """A component's share of the whole phase: the mean of its weight over the phase."""
    return sum(segment.integral() for segment in segments)


def _value(weight: Weight, at: float, from_left: bool) -> float:
    """The weight at ``at``; at a step's point ``from_left`` takes the value before the step."""
    if not isinstance(weight, WeightSchedule):
        return float(weight)
    points = weight.points
    before = [index for index, (point, _) in enumerate(points) if point < at or (point == at and not from_left)]
    if not before:
        return points[0][1]
    index = before[-1]
    if weight.shape == "step" or index == len(points) - 1:
        return points[index][1]
    (x0, w0), (x1, w1) = points[index], points[index + 1]
    return w0 + (w1 - w0) * (at - x0) / (x1 - x0)
