"""Subprocess entry for the kill-and-resume test: python tests/_toy_search.py WORK_DIR N DELAY."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy import ToyEvaluator, ToySpace  # noqa: E402

from densenas.history import History  # noqa: E402
from densenas.loop import Budget, run  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402

work, n, delay = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
space = ToySpace()
strategy = build_strategy({"type": "reinforce", "lr": 0.05, "seed": 3}, space)
with History(work / "history.sqlite") as h:
    run(space, strategy, ToyEvaluator(delay=delay), h, Budget(candidates=n, seed=7))
