"""Results and budgets exchanged between the search loop, strategies and evaluators."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

OK, FAILED = "ok", "failed"
#: how the error of a candidate rejected before training by a hard cost limit begins (objective.limit); such
#: rows stay in the history with their costs but do not count towards a search's candidates.
OVER_LIMIT = "over the hard limit"


@dataclass
class Result:
    """Outcome of evaluating one architecture.

    Attributes:
        status: ``"ok"`` or ``"failed"`` (diverged, raised, out of memory; see ``error``).
        reward: scalar the strategy maximises (``None`` when failed).
        metrics: named figures (e.g. ``miou``, ``fwiou``, ``pixel_acc``, ``stage1_reward``).
        stage: last stage reached (1 = decoder only on cached features, 2 = end to end).
        cost: model cost figures (``params``, ``madds``, ``latency_ms``).
        wall_time: seconds spent evaluating.
        error: why it failed.
    """

    status: str = OK
    reward: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stage: int = 0
    cost: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK and self.reward is not None and math.isfinite(self.reward)

    @property
    def over_limit(self) -> bool:
        """Rejected before training by a hard cost limit (:data:`OVER_LIMIT`)."""
        return self.status == FAILED and (self.error or "").startswith(OVER_LIMIT)

    @classmethod
    def failed(cls, error: str, stage: int = 0, wall_time: float = 0.0, **metrics: float) -> "Result":
        return cls(status=FAILED, reward=None, metrics=dict(metrics), stage=stage,
                   wall_time=wall_time, error=error)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        return cls(**d)
