"""REINFORCE controller: an LSTM policy over the space's decisions.

The reinforcement-learning strategy of Zoph & Le, "Neural Architecture Search with Reinforcement
Learning" (ICLR 2017), as used by Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic
Segmentation Models via Auxiliary Cells" (CVPR 2019), with the logit temperature / ``tanh`` clipping
of ENAS (Pham et al., ICML 2018).

An ``nn.LSTMCell`` emits one categorical decision per step, in ``space.decisions()`` order. Each
decision has its own softmax head (option counts differ) and its own embedding table, whose row for the
chosen option is the next step's input; the first input is a learned start vector. Training is
REINFORCE with an exponential-moving-average reward baseline, an entropy bonus and Adam, one update per
``batch_size`` observed results.

Ask/tell contract: :meth:`ReinforceController.observe` recomputes the log-probability of the arch by
teacher-forcing its option indices through the LSTM, so nothing is kept from :meth:`propose` and the
arch may come from a resumed history. :meth:`state_dict` is JSON-serialisable (tensors are stored as
base64 bytes) and restores the search bit for bit, RNG states included.
"""
from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..arch import Arch, InvalidArch
from ..result import Result
from ..space import SearchSpace
from .base import Strategy


class _Policy(nn.Module):
    """LSTM policy: learned start input, per-decision embeddings and softmax heads."""

    def __init__(self, n_options: list[int], hidden_size: int):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.lstm = nn.LSTMCell(hidden_size, hidden_size)
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden_size) for n in n_options)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in n_options)
        nn.init.uniform_(self.start, -0.1, 0.1)
        for p in list(self.lstm.parameters()) + list(self.embeddings.parameters()):
            nn.init.uniform_(p, -0.1, 0.1)
        for head in self.heads:  # start (almost) uniform over every decision's options
            nn.init.uniform_(head.weight, -0.01, 0.01)
            nn.init.zeros_(head.bias)


def _encode(obj: Any) -> Any:
    """Make a nested state JSON-safe: tensors/arrays become base64 bytes, non-str dict keys kept."""
    if isinstance(obj, torch.Tensor):
        a = obj.detach().cpu().contiguous()
        raw = a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b""
        return {"__tensor__": str(a.dtype).removeprefix("torch."), "shape": list(a.shape),
                "data": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"__items__": [[k, _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: Any) -> Any:
    """Inverse of :func:`_encode` (also accepts states that still hold tensors)."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            dtype = getattr(torch, obj["__tensor__"])
            raw = bytearray(base64.b64decode(obj["data"]))
            flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            return flat.view(dtype).reshape(obj["shape"]).clone()
        if "__items__" in obj:
            return {k: _decode(v) for k, v in obj["__items__"]}
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


class ReinforceController(Strategy):
    """LSTM controller trained with REINFORCE (Zoph & Le 2017; Nekrasov et al. 2019).

    Rewards are centred by an exponential moving average ``baseline`` and, with ``normalize=True``
    (default; not in the papers), divided by an exponential moving standard deviation. Adam already
    makes the step size independent of the reward scale; normalising also makes the balance against
    the entropy bonus and ``failure_margin`` the same for rewards in [0, 1] (mIoU) and in [90, 95]
    (pixel accuracy in %).

    Defaults (lr 0.005, batch 4, tanh 1.5) were chosen on a 6 x 4 toy space and TransNAS-Bench-101
    micro (``benchmarks/bench_transnas.py``); they aim at searches of a few hundred evaluations.

    Failed results (``result.ok`` is False): with ``failure_reward=None`` (default) they get an advantage
    of ``-failure_margin`` (in baseline-std units when normalising), i.e. "``failure_margin`` standard
    deviations worse than the baseline", and they do not move the baseline, so a run of crashes cannot
    drag the baseline down and make mediocre archs look good. With a number, that number is used as the
    reward like any other.

    Args:
        space: the search space.
        seed: seeds the private ``torch.Generator`` (sampling, initial weights) and the numpy RNG.
        hidden_size: LSTM hidden and embedding size.
        lr: Adam learning rate.
        batch_size: results per policy update.
        baseline_decay: EMA decay of the reward baseline (and of the reward variance).
        entropy_weight: weight of the summed per-decision entropy bonus.
        temperature: logits are divided by it before sampling and scoring (ENAS: 5.0).
        tanh_constant: logits become ``c * tanh(logits)`` (default 1.5 as in ENAS' macro search;
            ``None``: off). It bounds how sure the policy can get (with 4 options, p <= 0.87 per
            decision), which keeps it exploring; without it the controller often collapses early on
            a suboptimal arch.
        normalize: divide advantages by the running reward standard deviation.
        failure_reward: reward of a failed result; ``None`` means "baseline minus a margin".
        failure_margin: that margin (baseline-std units when normalising, reward units otherwise).
        max_resample: invalid samples are redrawn up to this many times, then ``space.sample`` is used.
        grad_clip: max gradient norm (``None``: no clipping).
        sample_chunk: samples drawn per LSTM pass in :meth:`propose` (a batch; speeds up resampling).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, hidden_size: int = 64, lr: float = 0.005,
                 batch_size: int = 4, baseline_decay: float = 0.9, entropy_weight: float = 1e-3,
                 temperature: float | None = None, tanh_constant: float | None = 1.5,
                 normalize: bool = True, failure_reward: float | None = None,
                 failure_margin: float = 1.0, max_resample: int = 100,
                 grad_clip: float | None = 5.0, sample_chunk: int = 16):
        super().__init__(space, seed)
        self.decisions = list(space.decisions())
        self.n_options = [len(d) for d in self.decisions]
        self.batch_size = int(batch_size)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.normalize = bool(normalize)
        self.failure_reward = failure_reward
        self.failure_margin = float(failure_margin)
        self.max_resample = int(max_resample)
        self.grad_clip = grad_clip
        self.sample_chunk = max(1, int(sample_chunk))
        self.gen = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG untouched
            torch.manual_seed(int(seed))
            self.policy = _Policy(self.n_options, int(hidden_size))
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.baseline: float | None = None
        self.reward_var: float | None = None
        self.buffer: list[tuple[dict[str, Any], float | None]] = []
        self.stats = {"proposed": 0, "resampled": 0, "fallback": 0, "updates": 0}

    # ------------------------------------------------------------------ policy
    def _logits(self, h: torch.Tensor, step: int) -> torch.Tensor:
        logits = self.policy.heads[step](h)
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _run(self, indices: list[list[int]] | None = None, greedy: bool = False, n: int = 1
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Step the LSTM over a batch; teacher-force ``indices`` (one row per arch), else sample
        (or take the argmax of) ``n`` sequences.

        Returns:
            The chosen indices ``[n, n_decisions]`` and per-step log-softmaxes ``[n, n_options]``.
        """
        forced = torch.tensor(indices, dtype=torch.long) if indices is not None else None
        n = len(forced) if forced is not None else n
        inp, state = self.policy.start.expand(n, -1), None
        chosen, log_probs = [], []
        for step in range(len(self.decisions)):
            state = self.policy.lstm(inp, state)
            logp = torch.log_softmax(self._logits(state[0], step), dim=-1)
            if forced is not None:
                idx = forced[:, step]
            elif greedy:
                idx = logp.argmax(dim=-1)
            else:
                idx = torch.multinomial(logp.detach().exp(), 1, generator=self.gen).squeeze(1)
            chosen.append(idx)
            log_probs.append(logp)
            inp = self.policy.embeddings[step](idx)
        return torch.stack(chosen, dim=1), log_probs

    def _arch_indices(self, arch: Arch) -> list[int]:
        if arch.space != self.space.name:
            raise InvalidArch(f"arch is for space {arch.space!r}, not {self.space.name!r}")
        return arch.indices(self.decisions)

    def log_prob(self, arch: Arch) -> float:
        """Log-probability of ``arch`` under the current (unconstrained) policy."""
        with torch.no_grad():
            idx = self._arch_indices(arch)
            _, log_probs = self._run([idx])
            return float(sum(lp[0, i] for lp, i in zip(log_probs, idx)))

    def probabilities(self, arch: Arch | None = None) -> list[np.ndarray]:
        """Per-decision option probabilities along ``arch`` (teacher-forced), or along :meth:`greedy`."""
        with torch.no_grad():
            idx = [self._arch_indices(arch)] if arch is not None else None
            _, log_probs = self._run(idx, greedy=idx is None)
            return [lp[0].exp().numpy().astype(np.float64) for lp in log_probs]

    def greedy(self) -> Arch:
        """The arch taking the most likely option at every step (may be invalid for the space)."""
        with torch.no_grad():
            idx, _ = self._run(greedy=True)
        return self.space.from_indices(idx[0].tolist())

    # --------------------------------------------------------------- ask/tell
    def suggest(self) -> Arch:
        """Sample from the policy; invalid samples are redrawn, then ``space.sample`` takes over.

        Draws up to ``1 + max_resample`` samples, ``sample_chunk`` per LSTM pass, and returns the
        first valid one (distributed as the policy conditioned on validity).
        """
        self.stats["proposed"] += 1
        left = self.max_resample + 1
        with torch.no_grad():
            while left > 0:
                n = min(self.sample_chunk, left)
                left -= n
                idx, _ = self._run(n=n)
                for row in idx.tolist():
                    arch = self.space.from_indices(row)
                    if self.space.is_valid(arch):
                        return arch
                    self.stats["resampled"] += 1
        self.stats["fallback"] += 1
        return self.space.sample(self.rng)

    def observe(self, arch: Arch, result: Result) -> None:
        """Queue ``(arch, reward)``; every ``batch_size`` results, take one policy-gradient step."""
        self._arch_indices(arch)  # fail early on an arch from another space
        if result.ok:
            reward: float | None = float(result.reward)
        elif self.failure_reward is not None:
            reward = float(self.failure_reward)
        else:
            reward = None
        self.buffer.append((arch.to_dict(), reward))
        if len(self.buffer) >= self.batch_size:
            self._update()

    def _advantage(self, reward: float | None) -> float:
        """Advantage of one reward; updates baseline and variance (failures leave them alone)."""
        if reward is None:
            return -self.failure_margin
        if self.baseline is None:
            self.baseline = reward
            return 0.0
        diff = reward - self.baseline
        d = self.baseline_decay
        self.reward_var = diff * diff if self.reward_var is None else d * self.reward_var + (
            1 - d) * diff * diff
        self.baseline = d * self.baseline + (1 - d) * reward
        if not self.normalize:
            return diff
        return diff / math.sqrt(self.reward_var) if self.reward_var > 1e-12 else 0.0

    def _update(self) -> None:
        self.policy.train()
        self.optimizer.zero_grad()
        adv = torch.tensor([self._advantage(r) for _, r in self.buffer])
        idx, log_probs = self._run([self._arch_indices(Arch.from_dict(a)) for a, _ in self.buffer])
        logp = sum(lp.gather(1, idx[:, s:s + 1]).squeeze(1) for s, lp in enumerate(log_probs))
        entropy = sum(-(lp.exp() * lp).sum(dim=1) for lp in log_probs)
        loss = -(adv * logp).mean() - self.entropy_weight * entropy.mean()
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.optimizer.step()
        self.buffer = []
        self.stats["updates"] += 1

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit; JSON-serialisable (and ``torch.save``-able)."""
        return {
            **super().state_dict(),
            "type": "reinforce",
            "space": self.space.name,
            "n_options": list(self.n_options),
            "torch_rng": _encode(self.gen.get_state()),
            "policy": _encode(self.policy.state_dict()),
            "optimizer": _encode(self.optimizer.state_dict()),
            "baseline": self.baseline,
            "reward_var": self.reward_var,
            "buffer": [[a, r] for a, r in self.buffer],
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a controller with the same space and sizes."""
        if state.get("space") != self.space.name or list(state.get("n_options", [])) != self.n_options:
            raise ValueError(f"state is for space {state.get('space')!r} with options "
                             f"{state.get('n_options')}, not {self.space.name!r} {self.n_options}")
        super().load_state_dict(state)
        self.gen.set_state(_decode(state["torch_rng"]))
        self.policy.load_state_dict(_decode(state["policy"]))
        self.optimizer.load_state_dict(_decode(state["optimizer"]))
        self.baseline = state["baseline"]
        self.reward_var = state["reward_var"]
        self.buffer = [(dict(a), r) for a, r in state["buffer"]]
        self.stats = dict(state.get("stats", self.stats))
