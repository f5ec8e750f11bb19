"""Evaluation: results, two-stage proxy training with early stopping, feature cache, KD, Polyak."""
from ..result import FAILED, OK, Result

__all__ = ["Result", "OK", "FAILED"]
