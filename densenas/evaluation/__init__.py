"""Candidate evaluation, for every task; imports no task.

* :mod:`.proxy`: the one two-stage proxy trainer of Nekrasov et al. ("Fast Neural Architecture Search of
  Compact Semantic Segmentation Models via Auxiliary Cells", CVPR 2019): cached frozen-encoder features,
  distillation, Polyak averaging, auxiliary heads, early stop against the running mean;
* :mod:`.supernet`: the one-shot evaluator, first-order DARTS supernet training (Liu et al., ICLR 2019);
* :mod:`.cache`: the frozen-encoder feature cache;
* :mod:`.common`: stage budgets, divergence, failure reasons, the early-stopping running mean.

``Result``, the value every strategy is told, lives in :mod:`densenas.result`.
"""
from .cache import FeatureCache, encode, fingerprint
from .common import Diverged, RunningMean, StageCfg, failure_reason, set_norm_eval
from .proxy import ProxyCfg, ProxyTrainer, deploy_params
from .supernet import Splits, SupernetTrainer, build_supernet_trainer, split_halves, trainer_for_task

__all__ = [
    "Diverged", "FeatureCache", "ProxyCfg", "ProxyTrainer", "RunningMean", "Splits", "StageCfg",
    "SupernetTrainer", "build_supernet_trainer", "deploy_params", "encode", "failure_reason", "fingerprint",
    "set_norm_eval", "split_halves", "trainer_for_task",
]
