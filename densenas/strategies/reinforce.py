"""REINFORCE controller: an LSTM policy over the space's decisions, trained with PPO's clipped objective.

The reinforcement-learning strategy of Zoph & Le, "Neural Architecture Search with Reinforcement
Learning" (ICLR 2017), as used by Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic
Segmentation Models via Auxiliary Cells" (CVPR 2019), with the logit ``tanh`` clipping of ENAS (Pham et
al., ICML 2018) and, by default, the clipped surrogate objective of PPO (Schulman et al., "Proximal
Policy Optimization Algorithms", 2017) to re-use every batch for several updates, as Zoph et al. (CVPR
2018) did for NASNet.

An ``nn.LSTMCell`` emits one categorical decision per step, in ``space.decisions()`` order. Each
decision has its own softmax head (option counts differ) and its own embedding table, whose row for the
chosen option is the next step's input; the first input is a learned start vector.

Why plain REINFORCE trailed random search at small budgets (TransNAS-Bench-101 micro,
``benchmarks/bench_transnas.py``): one Adam step per four results left the policy uniform for ~50
queries (mean per-decision max probability 0.25 -> 0.28 after 25 on segmentsemantic), so it *was*
random search there and its gap to random was seed noise; later it concentrated and re-proposed known
archs (5.4 proposals per new arch over 100 queries, up to 20 with ``batch_size=1``), which the loop
answers from its history and, after ``max_duplicates`` in a row, stops on. Here: several PPO epochs
per result, rank advantages (scale-free; a diverged candidate is just the worst rank instead of
inflating the running std that divides every later advantage), proposals that skip known archs
(``dedup``) and a uniform warm-up (a random initial design, as Optuna TPE's ``n_startup_trials=10``).

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
    """LSTM controller trained with REINFORCE / PPO (Zoph & Le 2017; Nekrasov et al. 2019; Schulman 2017).

    Advantages (``advantage``): ``"rank"`` (default) is the reward's centred rank, in [-1, 1], among the
    last ``rank_window`` successful rewards, the batch's included (rank-based fitness shaping as in
    natural evolution strategies, Wierstra et al., JMLR 2014): scale-free and blind to outliers.
    ``"ema"`` is the papers' reward minus an exponential-moving-average ``baseline``, divided with
    ``normalize=True`` by an exponential moving standard deviation. The EMA baseline is kept in both
    modes (reported as :attr:`baseline`).

    Update: every ``batch_size`` results, ``ppo_epochs`` Adam steps on PPO's clipped objective
    ``min(ratio * A, clip(ratio, 1 - clip_ratio, 1 + clip_ratio) * A)``, ``ratio = p_now / p_old`` with
    ``p_old`` the policy at the update's start; the first step is exactly REINFORCE's, the next re-use
    the batch until the ratio leaves the clip range. Plus an entropy bonus and gradient-norm clipping.

    Proposals: the first ``warmup`` distinct archs are ``space.sample`` draws (the untrained policy is
    near uniform anyway; these are exactly uniform over *valid* archs). Then the policy is sampled,
    redrawing invalid and (``dedup``) already proposed or observed archs, ``1 + max_resample`` draws at
    most; then a new uniform arch, else a known one (the space is exhausted).

    Defaults (one result per update, lr 0.003, 4 PPO epochs, rank window 20, warm-up 10): chosen on
    TransNAS-Bench-101 micro, 4 tasks x 50 seeds: regret as random search's up to 10 queries, 0.76-0.87
    of it at 25, 0.55-0.69 at 50, 0.38-0.51 at 100; meant for 10 to a few hundred candidates.

    Failed results (``result.ok`` is False): with ``failure_reward=None`` (default) their advantage is
    ``-failure_margin`` (``"rank"``: -1 is the worst rank; ``"ema"``: in baseline-std units when
    normalising) and they move neither baseline nor rank window, so crashes cannot make mediocre archs
    look good. With a number, that number is used as the reward like any other.

    Args:
        space: the search space.
        seed: seeds the private ``torch.Generator`` (sampling, initial weights) and the numpy RNG.
        hidden_size: LSTM hidden and embedding size.
        lr: Adam learning rate.
        batch_size: results per policy update.
        ppo_epochs: Adam steps per batch (1: plain REINFORCE, one step per batch).
        clip_ratio: PPO's clip range epsilon on the probability ratio.
        advantage: ``"rank"`` or ``"ema"`` (see above).
        rank_window: successful rewards the rank is taken among (0: all so far).
        baseline_decay: EMA decay of the reward baseline (and of the reward variance).
        normalize: ``"ema"`` only: divide advantages by the running reward standard deviation.
        entropy_weight: weight of the summed per-decision entropy bonus.
        temperature: logits are divided by it before sampling and scoring (ENAS: 5.0).
        tanh_constant: logits become ``c * tanh(logits)`` (1.5 as in ENAS' macro search; ``None``: off),
            which bounds how sure the policy gets (4 options: p <= 0.87 per decision), so it explores.
        failure_reward: reward of a failed result (``None``: advantage ``-failure_margin``, see above).
        failure_margin: see ``failure_reward``.
        warmup: distinct archs drawn uniformly before the policy proposes (0: none).
        dedup: do not propose archs already proposed or observed while the redraw budget lasts.
        max_resample: redraws of invalid (or, with ``dedup``, known) policy samples.
        grad_clip: max gradient norm (``None``: no clipping).
        sample_chunk: samples drawn per LSTM pass in :meth:`propose` (a batch; speeds up resampling).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, hidden_size: int = 64, lr: float = 0.003,
                 batch_size: int = 1, ppo_epochs: int = 4, clip_ratio: float = 0.2,
                 advantage: str = "rank", rank_window: int = 20, baseline_decay: float = 0.9,
                 normalize: bool = True, entropy_weight: float = 1e-3, temperature: float | None = None,
                 tanh_constant: float | None = 1.5, failure_reward: float | None = None,
                 failure_margin: float = 1.0, warmup: int = 10, dedup: bool = True,
                 max_resample: int = 100, grad_clip: float | None = 5.0, sample_chunk: int = 16):
        super().__init__(space, seed)
        if advantage not in ("rank", "ema"):
            raise ValueError(f"advantage={advantage!r}: expected 'rank' or 'ema'")
        for name, value in (("batch_size", batch_size), ("ppo_epochs", ppo_epochs)):
            if int(value) < 1:
                raise ValueError(f"{name}={value}: must be at least 1")
        self.decisions = list(space.decisions())
        self.n_options = [len(d) for d in self.decisions]
        self.batch_size = int(batch_size)
        self.ppo_epochs = int(ppo_epochs)
        self.clip_ratio = float(clip_ratio)
        self.advantage = advantage
        self.rank_window = int(rank_window)
        self.baseline_decay = float(baseline_decay)
        self.normalize = bool(normalize)
        self.entropy_weight = float(entropy_weight)
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.failure_reward = failure_reward
        self.failure_margin = float(failure_margin)
        self.warmup = int(warmup)
        self.dedup = bool(dedup)
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
        self.rewards: list[float] = []  # successful rewards, the last rank_window (all if 0)
        self.seen: set[str] = set()  # keys of archs proposed or observed
        self.buffer: list[tuple[dict[str, Any], float | None]] = []
        self.stats = {"proposed": 0, "resampled": 0, "repeats": 0, "fallback": 0, "updates": 0}

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
    def propose(self) -> Arch:
        """The warm-start queue's head, else :meth:`suggest`; either way marked as seen."""
        arch = super().propose()
        self.seen.add(arch.key)
        return arch

    def suggest(self) -> Arch:
        """A uniform arch during warm-up, else a policy sample (see the class docstring)."""
        self.stats["proposed"] += 1
        if len(self.seen) < self.warmup:
            arch = self._uniform()
            if arch is not None:
                return arch
        arch, repeat = self._sample_policy()
        if arch is not None:
            return arch
        self.stats["fallback"] += 1
        return self._uniform() or repeat or self.space.sample(self.rng)

    def _uniform(self) -> Arch | None:
        """A uniform valid arch not seen yet (any with ``dedup=False``); ``None`` if redraws ran out."""
        for _ in range(self.max_resample + 1 if self.dedup else 1):
            arch = self.space.sample(self.rng)
            if not self.dedup or arch.key not in self.seen:
                return arch
        return None

    def _sample_policy(self) -> tuple[Arch | None, Arch | None]:
        """Up to ``1 + max_resample`` policy samples, ``sample_chunk`` per LSTM pass: the first valid
        (and, with ``dedup``, unseen) one, else ``None`` and the first valid but known one."""
        left, repeat = self.max_resample + 1, None
        with torch.no_grad():
            while left > 0:
                n = min(self.sample_chunk, left)
                left -= n
                idx, _ = self._run(n=n)
                for row in idx.tolist():
                    arch = self.space.from_indices(row)
                    if not self.space.is_valid(arch):
                        self.stats["resampled"] += 1
                    elif self.dedup and arch.key in self.seen:
                        self.stats["repeats"] += 1
                        repeat = repeat or arch
                    else:
                        return arch, None
        return None, repeat

    def observe(self, arch: Arch, result: Result) -> None:
        """Queue ``(arch, reward)``; every ``batch_size`` results, update the policy."""
        self._arch_indices(arch)  # fail early on an arch from another space
        self.seen.add(arch.key)
        if result.ok:
            reward: float | None = float(result.reward)
        elif self.failure_reward is not None:
            reward = float(self.failure_reward)
        else:
            reward = None
        self.buffer.append((arch.to_dict(), reward))
        if len(self.buffer) >= self.batch_size:
            self._update()

    def _advantages(self, rewards: list[float | None]) -> list[float]:
        """Advantages of a batch; updates baseline, variance and rank window (failures do not)."""
        ema = [-self.failure_margin if r is None else self._ema_advantage(r) for r in rewards]
        if self.advantage == "ema":
            return ema
        self.rewards += [r for r in rewards if r is not None]  # the window includes the batch
        if self.rank_window > 0:
            del self.rewards[:-self.rank_window]
        return [-self.failure_margin if r is None else self._rank(r) for r in rewards]

    def _rank(self, reward: float) -> float:
        """Centred rank of ``reward`` in the window, in [-1, 1]; other equal rewards count half."""
        n = len(self.rewards)
        if n < 2:
            return 0.0
        below = sum(r < reward for r in self.rewards)
        ties = sum(r == reward for r in self.rewards) - 1
        return 2.0 * (below + 0.5 * ties) / (n - 1) - 1.0

    def _ema_advantage(self, reward: float) -> float:
        """Reward minus the EMA baseline (over the running std with ``normalize``); updates both."""
        if self.baseline is None:
            self.baseline = reward
            return 0.0
        diff = reward - self.baseline
        d = self.baseline_decay
        self.reward_var = diff * diff if self.reward_var is None else d * self.reward_var + (1 - d) * diff * diff
        self.baseline = d * self.baseline + (1 - d) * reward
        if not self.normalize:
            return diff
        return diff / math.sqrt(self.reward_var) if self.reward_var > 1e-12 else 0.0

    def _update(self) -> None:
        """``ppo_epochs`` Adam steps on the clipped surrogate over the buffered batch."""
        adv = torch.tensor(self._advantages([r for _, r in self.buffer]))
        rows = [self._arch_indices(Arch.from_dict(a)) for a, _ in self.buffer]
        old = None
        for _ in range(self.ppo_epochs):
            self.optimizer.zero_grad()
            idx, log_probs = self._run(rows)
            logp = sum(lp.gather(1, idx[:, s:s + 1]).squeeze(1) for s, lp in enumerate(log_probs))
            entropy = sum(-(lp.exp() * lp).sum(dim=1) for lp in log_probs)
            if old is None:
                old = logp.detach()
            ratio = torch.exp(logp - old)
            clipped = ratio.clamp(1.0 - self.clip_ratio, 1.0 + self.clip_ratio)
            loss = -torch.minimum(ratio * adv, clipped * adv).mean() - self.entropy_weight * entropy.mean()
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
            "rewards": list(self.rewards),
            "seen": sorted(self.seen),
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
        self.rewards = [float(r) for r in state.get("rewards", ())]
        self.seen = set(state.get("seen", ()))
        self.buffer = [(dict(a), r) for a, r in state["buffer"]]
        self.stats = {**self.stats, **state.get("stats", {})}  # older states lack newer counters
