"""Surrogate-guided search: Bayesian optimisation over the categorical decisions of any space.

The model-based search of PNAS (Liu et al., "Progressive Neural Architecture Search", ECCV 2018: a cheap
predictor ranks candidates before any is trained), BANANAS (White, Neiswanger & Savani, AAAI 2021:
predictor + acquisition maximised by mutating the best archs) and SMAC (Hutter, Hoos & Leyton-Brown,
LION 2011: random-forest surrogate whose spread across trees is the uncertainty). Two surrogates:

- ``model="gp"`` (default): a Gaussian process on the one-hot encoding. Its kernel is an RBF on the
  one-hot vectors, i.e. an exponentiated Hamming kernel ``s^2 exp(-hamming(a, b) / l^2)`` (the kernel of
  COMBO / BOSS style categorical BO), plus a linear kernel on the same vectors (``additive=True``: the
  number of shared decisions, i.e. one additive effect per option, which dense-prediction cells largely
  have), plus white noise; hyper-parameters by marginal likelihood. The rewards are first mapped to normal
  scores of their ranks (``y_transform="rank"``, as HEBO's output warping does): NAS rewards have a long
  tail of poor archs that would otherwise dominate the fit. scikit-learn's ``GaussianProcessRegressor``
  does the fitting (Cholesky, L-BFGS) so we write none of it.
- ``model="forest"``: scikit-learn's ``RandomForestRegressor``; mean and spread across the trees.

The acquisition (expected improvement, UCB or Thompson sampling) is maximised over a pool of random valid
archs plus every valid one-decision neighbour of the best observed archs, refined by a few rounds of local
search around the pool's best; archs already observed or pending are never proposed again. Proposals made
before earlier ones are observed (:meth:`Strategy.propose_batch`, parallel workers) see the pending archs
as fantasies at the surrogate's mean ("kriging believer", Ginsbourger et al. 2010), so a batch spreads out.

Many decisions (``benchmarks/bench_transnas.py``, regret as a fraction of random search's at 10/25/50
queries, 20 seeds): 0.98/0.81/0.68 on a 24-decision table (``--compose segmentsemantic,normal,
autoencoder,room_layout``) and 1.15/1.08/0.96 on the 16-decision table of our own aux-cell searches
(``--history``), against 0.78/0.46/0.38 on TransNAS-Bench-101 micro segmentsemantic (6 decisions): little
edge before 25 queries. Tried there and not adopted: MAP hyper-parameters with a length-scale prior whose
median grows with the square root of the number of decisions (Hvarfner, Hellsten & Nardi, ICML 2024)
1.04/0.81/0.67, 1.50/1.79/1.95 and 0.95/0.54/0.48 on segmentsemantic (it holds the RBF at a near-linear
length scale); such a prior at the typical distance between archs 0.88/0.79/0.68 and 1.04/1.19/1.08;
restarts at every fit (the warm-started fit can stay at the length scale's lower bound, where its gradient
is zero) 1.00/0.81/0.69; ``n_init`` 3 or 2: 1.13/0.89 and 1.10/0.89 at 10/25; UCB 0.96/0.83, the forest
0.91/0.80. What helps at 10-25 queries is a zero-cost prior: the #params warm start
(``strategy.warm_start=dict(proxy="params")``) reaches 0.83/0.73/0.67 and 0.52/0.32/0.53 on the two tables;
or a prior from earlier searches of the same space (:meth:`SurrogateSearch.set_prior`, ``strategy.prior``):
their results join the fit from the first proposal on (docs/benchmarks.md has the figures: it pays when the
earlier task ranks archs alike).

Only ``space.decisions``, ``sample``, ``check`` and ``Arch.replace`` are used, so it works for every space.
The state is the list of observations, the pending archs and the RNG: the surrogate is refit from them,
so a resumed search proposes exactly what the original would have.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata
from threadpoolctl import threadpool_limits

from ..arch import Arch
from ..result import Result
from ..space import SearchSpace
from .base import Strategy

MODELS = ("gp", "forest")
ACQUISITIONS = ("ei", "ucb", "ts")


def joint_draw(mu: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw from ``N(mu, cov)``: Thompson sampling's joint posterior sample over the pool.

    Written here rather than with scikit-learn's ``GaussianProcessRegressor.sample_y``: that goes through
    numpy's ``multivariate_normal``, whose SVD does not converge on the nearly singular covariance of a pool
    full of near-identical archs (``LinAlgError: SVD did not converge``, seen on a 24-decision table). A
    Cholesky factor with a jitter that grows until it factorises draws the same distribution; where even
    that fails (a covariance with NaNs), the marginals are drawn independently.
    """
    mu = np.asarray(mu, dtype=float)
    n = len(mu)
    cov = (np.asarray(cov, dtype=float) + np.asarray(cov, dtype=float).T) / 2
    z = rng.standard_normal(n)
    if np.isfinite(cov).all():
        jitter = 1e-10 * max(float(np.abs(np.diag(cov)).mean()), 1e-12)
        for _ in range(10):
            try:
                return mu + np.linalg.cholesky(cov + jitter * np.eye(n)) @ z
            except np.linalg.LinAlgError:
                jitter *= 10.0
    sd = np.sqrt(np.clip(np.nan_to_num(np.diag(cov)), 0.0, None))
    return mu + sd * z


class SurrogateSearch(Strategy):
    """Model-based search with a GP (or random-forest) surrogate and a local-search acquisition optimiser.

    Failed candidates get the worst observed reward (so the surrogate steers away from them) and are never
    proposed again; until ``n_init`` results are observed, proposals are uniform random (the warm-start
    queue of :meth:`seed_with`, e.g. zero-cost-ranked archs, counts as initial design).

    Args:
        space: the search space.
        seed: seeds the numpy RNG (sampling, model fitting, Thompson draws).
        model: ``"gp"`` or ``"forest"``.
        acquisition: ``"ei"`` (expected improvement), ``"ucb"`` (mean + ``beta`` x std) or ``"ts"``
            (Thompson sampling: one joint posterior draw over the pool).
        n_init: random proposals before the surrogate takes over.
        pool_size: random valid archs in the acquisition pool per proposal.
        top_k: the best observed archs whose one-decision neighbours join the pool.
        local_steps: rounds of local search (neighbours of the pool's ``top_k`` best by acquisition).
        xi: exploration margin of EI, in units of the (standardised) reward.
        beta: UCB's weight on the standard deviation.
        n_restarts: GP marginal-likelihood optimiser restarts at the first fit; later fits start from
            the previous optimum.
        n_trees: trees of the forest model.
        ard: one RBF length scale per one-hot column instead of one in all (slower; on TransNAS-Bench-101
            it did not help at 25-100 queries).
        y_transform: ``"rank"`` (normal scores of the reward ranks) or ``"none"`` (raw rewards).
        additive: add the linear (additive per-decision) kernel to the GP's RBF.
        prior_distance: how far (in decisions) an arch of an earlier search (:meth:`set_prior`) is from the
            same arch in this search, for the surrogate's kernel. At the default 32 the RBF part hardly links
            the two searches and mostly the additive per-decision effects carry over: on TransNAS-Bench-101
            it lost less than 8 or 16 when the earlier task ranked archs differently
            (``benchmarks/bench_transnas.py --prior``, docs/benchmarks.md).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, model: str = "gp", acquisition: str = "ei",
                 n_init: int = 5, pool_size: int = 1024, top_k: int = 5, local_steps: int = 2,
                 xi: float = 0.0, beta: float = 2.0, n_restarts: int = 2, n_trees: int = 64,
                 ard: bool = False, y_transform: str = "rank", additive: bool = True, prior_distance: float = 32.0):
        super().__init__(space, seed)
        if model not in MODELS:
            raise ValueError(f"strategy 'surrogate': model={model!r} is not one of {MODELS}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"strategy 'surrogate': acquisition={acquisition!r} is not one of {ACQUISITIONS}")
        for key, value, low in (("n_init", n_init, 1), ("pool_size", pool_size, 1), ("top_k", top_k, 1),
                                ("local_steps", local_steps, 0), ("n_trees", n_trees, 1)):
            if int(value) < low:
                raise ValueError(f"strategy 'surrogate': {key}={value} must be >= {low}")
        self.model, self.acquisition = model, acquisition
        self.n_init, self.pool_size, self.top_k = int(n_init), int(pool_size), int(top_k)
        self.local_steps, self.xi, self.beta = int(local_steps), float(xi), float(beta)
        self.n_restarts, self.n_trees, self.ard = int(n_restarts), int(n_trees), bool(ard)
        if y_transform not in ("rank", "none"):
            raise ValueError(f"strategy 'surrogate': y_transform={y_transform!r} is not 'rank' or 'none'")
        self.y_transform = y_transform
        self.additive = bool(additive)
        if not float(prior_distance) > 0:
            raise ValueError(f"strategy 'surrogate': prior_distance={prior_distance!r} must be > 0")
        self.prior_distance = float(prior_distance)
        self.prior: list[tuple[Arch, float]] = []  # (arch, reward) of earlier searches (set_prior)
        self._prior_xy: tuple[np.ndarray, np.ndarray] | None = None  # _prior_data's cache
        self.decs = list(space.decisions())
        self.offsets = np.cumsum([0] + [len(d) for d in self.decs])
        self.observed: list[tuple[Arch, float | None]] = []  # in order; None = failed
        self.pending: list[Arch] = []
        self.seen: set[str] = set()
        self.theta: list[float] | None = None  # the GP's last fitted log hyper-parameters
        self.stats = {"proposals": 0, "model_proposals": 0, "fit_s": 0.0, "acq_s": 0.0}

    # ---------------------------------------------------------------- encoding
    def encode(self, archs: list[Arch], prior: bool = False) -> np.ndarray:
        """One-hot rows (``len(archs) x sum(options)``): squared distance = 2 x Hamming distance. With a
        prior (:meth:`set_prior`) one more column tells the searches apart: ``sqrt(2 * prior_distance)`` for
        the archs of earlier searches (``prior=True``), 0 for this one's, so an arch of an earlier search is
        ``prior_distance`` decisions away from the same arch here."""
        x = np.zeros((len(archs), int(self.offsets[-1]) + (1 if self.prior else 0)))
        for row, arch in enumerate(archs):
            x[row, self.offsets[:-1] + np.asarray(arch.indices(self.decs))] = 1.0
        if self.prior and prior:
            x[:, -1] = np.sqrt(2.0 * self.prior_distance)
        return x

    def set_prior(self, pairs: list[tuple[Arch, float | None]]) -> int:
        """Results of earlier searches of this space (another dataset, task or budget) that the surrogate
        learns from alongside this search's: a transfer prior for the first proposals, where a model fitted
        on a handful of results knows little (issue #24: the surrogate had little edge over random search
        before 25 queries on spaces of 16-24 decisions).

        Each source's rewards are mapped to normal scores of their ranks on their own (``y_transform``), so
        only the ranking of the earlier search matters, not its scale; an earlier arch sits
        ``prior_distance`` decisions away from the same arch of this search in the kernel, so this search's
        own results win where the two disagree. The archs of the prior are not observed here: they can be
        proposed (and trained) like any other. Failed ones (``None``) and archs invalid in this space are
        dropped. The prior is part of the state (a resumed search keeps the one it started with).

        Returns:
            The number of prior results kept.
        """
        kept = []
        for arch, reward in pairs:
            if reward is None or not np.isfinite(reward):
                continue
            if self.space.is_valid(arch):
                kept.append((arch, float(reward)))
        self.prior, self._prior_xy = kept, None
        return len(kept)

    def _prior_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The prior's encoding (with the source column) and rank scores, computed once per prior."""
        if self._prior_xy is None:
            self._prior_xy = (self.encode([a for a, _ in self.prior], prior=True),
                              self._transform(np.asarray([r for _, r in self.prior])))
        return self._prior_xy

    def _targets(self) -> tuple[list[Arch], np.ndarray]:
        """Observed archs and rewards; failures get the worst finite reward (dropped while none)."""
        good = [r for _, r in self.observed if r is not None]
        worst = min(good) if good else None
        pairs = [(a, worst if r is None else r) for a, r in self.observed if r is not None or worst is not None]
        return [a for a, _ in pairs], np.asarray([r for _, r in pairs], dtype=np.float64)

    # ------------------------------------------------------------------ model
    def _fit(self, x: np.ndarray, y: np.ndarray) -> Any:
        # a draw from our own RNG seeds the fit, so the fit is part of the resumable RNG stream
        random_state = int(self.rng.integers(2**31 - 1))
        if self.model == "forest":
            from sklearn.ensemble import RandomForestRegressor
            return RandomForestRegressor(n_estimators=self.n_trees, min_samples_leaf=1, max_features=0.5,
                                         random_state=random_state).fit(x, y)
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel
        scale = np.full(x.shape[1], 2.0) if self.ard else 2.0
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(scale, (0.1, 50.0)) + WhiteKernel(1e-2, (1e-6, 1.0))
        if self.additive:
            kernel = kernel + ConstantKernel(0.1, (1e-3, 1e2)) * DotProduct(0.0, "fixed")
        if self.theta is not None:  # start from the last optimum: one short L-BFGS run instead of restarts
            kernel = kernel.clone_with_theta(np.asarray(self.theta))
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=random_state,
                                      n_restarts_optimizer=self.n_restarts if self.theta is None else 0)
        with warnings.catch_warnings():  # bound-hitting hyper-parameters are expected on tiny data
            warnings.simplefilter("ignore")
            gp.fit(x, y)
        self.theta = [float(v) for v in gp.kernel_.theta]
        return gp

    def _with_fantasies(self, fitted: Any, x: np.ndarray, y: np.ndarray) -> Any:
        """Condition on pending archs at the model's mean, keeping the fitted hyper-parameters."""
        if not self.pending:
            return fitted
        xp = self.encode(self.pending)
        xa, ya = np.vstack([x, xp]), np.concatenate([y, fitted.predict(xp)])
        if self.model == "forest":
            return type(fitted)(**fitted.get_params()).fit(xa, ya)
        from sklearn.gaussian_process import GaussianProcessRegressor
        gp = GaussianProcessRegressor(kernel=fitted.kernel_, normalize_y=True, optimizer=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gp.fit(xa, ya)

    def _predict(self, fitted: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.model == "forest":
            per_tree = np.stack([t.predict(x) for t in fitted.estimators_])
            return per_tree.mean(axis=0), per_tree.std(axis=0)
        mu, sd = fitted.predict(x, return_std=True)
        return mu, sd

    def _score(self, fitted: Any, archs: list[Arch], best: float, scale: float) -> np.ndarray:
        x = self.encode(archs)
        if self.acquisition == "ts":
            if self.model == "forest":  # one tree's prediction is a draw from the forest's posterior
                tree = fitted.estimators_[int(self.rng.integers(len(fitted.estimators_)))]
                return tree.predict(x)
            mu, cov = fitted.predict(x, return_cov=True)
            return joint_draw(mu, cov, self.rng)
        mu, sd = self._predict(fitted, x)
        if self.acquisition == "ucb":
            return mu + self.beta * sd
        sd = np.maximum(sd, 1e-9 * scale)
        z = (mu - best - self.xi * scale) / sd
        return (mu - best - self.xi * scale) * norm.cdf(z) + sd * norm.pdf(z)

    # ------------------------------------------------------------------ pool
    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every valid arch that differs from ``arch`` in exactly one decision."""
        out = []
        for d in self.decs:
            for option in d.options:
                if option != arch[d.name]:
                    child = arch.replace(**{d.name: option})
                    if self.space.is_valid(child):
                        out.append(child)
        return out

    def _pool(self, ranked: list[Arch]) -> dict[str, Arch]:
        pool: dict[str, Arch] = {}
        for _ in range(self.pool_size):
            a = self.space.sample(self.rng)
            pool.setdefault(a.key, a)
        for a in ranked[: self.top_k]:
            for n in self.neighbours(a):
                pool.setdefault(n.key, n)
        return {k: a for k, a in pool.items() if k not in self.seen}

    # --------------------------------------------------------------- ask/tell
    def suggest(self) -> Arch:
        """Random until ``n_init`` observations, then the acquisition's best unseen arch."""
        self.stats["proposals"] += 1
        archs, y = self._targets()
        if not self.prior and (len(archs) < self.n_init or np.ptp(y) == 0.0):
            arch = self._random_unseen()
        else:
            arch = self._model_proposal(archs, y)
        self.pending.append(arch)
        self.seen.add(arch.key)
        return arch

    def _random_unseen(self, tries: int = 100) -> Arch:
        arch = self.space.sample(self.rng)
        for _ in range(tries):
            if arch.key not in self.seen:
                break
            arch = self.space.sample(self.rng)
        return arch

    def _transform(self, y: np.ndarray) -> np.ndarray:
        """Rewards as the surrogate sees them: ``"rank"`` maps them to normal scores of their ranks
        (ties share a rank), so a long tail of bad archs does not flatten the differences at the top."""
        if self.y_transform == "none":
            return y
        return norm.ppf((rankdata(y, method="average") - 0.5) / len(y))

    #: this search's results needed before the prior is checked against them (:meth:`_prior_agrees`)
    PRIOR_CHECK_AFTER = 5
    #: the prior is left out when the one-sided test says it ranks this search's results the wrong way at
    #: this level (Kendall's tau < 0, p < alpha)
    PRIOR_CHECK_ALPHA = 0.1

    def _prior_agrees(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether the prior may still be used: from :data:`PRIOR_CHECK_AFTER` results on, each is predicted
        from the prior by kernel regression (the prior's rank scores weighted by ``exp(-hamming)``), and the
        prior is left out once Kendall's tau of those predictions against the results is significantly below
        0 (one-sided test, p < :data:`PRIOR_CHECK_ALPHA`): evidence that it misleads, not the mere absence of
        agreement. A search soon samples near its best, where the prior's predictions and the results both
        vary little, so tau hovers around 0 even for a prior that helps: on two real aux-cell searches whose
        prior raised the best of the first 5 candidates by 0.03-0.04, the earlier rule "tau > 0" would have
        left it out at 13 and 23 of 35 proposals, this one at none; on TransNAS-Bench-101 the two rules
        give the same regret within noise (docs/benchmarks.md, "A prior from an earlier search")."""
        if len(y) < self.PRIOR_CHECK_AFTER or np.ptp(y) == 0.0:
            return True
        from scipy.stats import kendalltau

        xp, py = self._prior_data()
        onehot = int(self.offsets[-1])  # the source column left out: decisions only
        w = np.exp(-(len(self.decs) - x[:, :onehot] @ xp[:, :onehot].T))  # shared one-hot columns = decisions alike
        p = kendalltau(w @ py / w.sum(axis=1), y, alternative="less").pvalue
        used = bool(np.isnan(p) or p >= self.PRIOR_CHECK_ALPHA)
        key = "prior_used" if used else "prior_dropped"
        self.stats[key] = self.stats.get(key, 0) + 1
        return used

    def _model_proposal(self, archs: list[Arch], y: np.ndarray) -> Arch:
        # BLAS threads only add overhead (and contention) on matrices of a few hundred rows
        with threadpool_limits(limits=1):
            return self._acquire(archs, self._transform(y) if len(y) else y)

    def _acquire(self, archs: list[Arch], y: np.ndarray) -> Arch:
        t0 = time.perf_counter()
        x = self.encode(archs)
        best = float(y.max()) if len(y) and np.ptp(y) > 0 else None
        if self.prior and self._prior_agrees(x, y):  # earlier results join the fit, each ranked on its own
            xp, py = self._prior_data()
            x, y_fit, archs_all = np.vstack([x, xp]), np.concatenate([y, py]), archs + [a for a, _ in self.prior]
        else:
            y_fit, archs_all = y, archs
        fitted = self._with_fantasies(self._fit(x, y_fit), x, y_fit)
        t1 = time.perf_counter()
        ranked = [archs_all[i] for i in np.argsort(-y_fit, kind="stable")]
        pool = self._pool(ranked)
        if best is None:  # nothing (or nothing distinct) observed here yet: improve on the prior's best
            best = float(y_fit.max())
        scale = float(y_fit.std()) or 1.0
        scores: dict[str, float] = {}
        for step in range(self.local_steps + 1):
            new = [a for k, a in pool.items() if k not in scores]
            if new:
                scores.update(zip((a.key for a in new), self._score(fitted, new, best, scale)))
            if step == self.local_steps:
                break
            for k in sorted(scores, key=scores.__getitem__, reverse=True)[: self.top_k]:
                for n in self.neighbours(pool[k]):
                    if n.key not in self.seen:
                        pool.setdefault(n.key, n)
        self.stats["fit_s"] += t1 - t0
        self.stats["acq_s"] += time.perf_counter() - t1
        if not scores:  # every arch near the best is known: explore
            return self._random_unseen()
        self.stats["model_proposals"] += 1
        return pool[max(scores, key=scores.__getitem__)]  # first of equal scores: deterministic

    def observe(self, arch: Arch, result: Result) -> None:
        """Record the result (failed: ``None``); the arch is no longer pending and never proposed again."""
        self.pending = [a for a in self.pending if a.key != arch.key]
        self.seen.add(arch.key)
        if any(a.key == arch.key for a, _ in self.observed):  # told again (answered from the history)
            return
        self.observed.append((arch, float(result.reward) if result.ok else None))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Observations, pending archs, seen keys, RNG and counters: plain data."""
        return {**super().state_dict(), "type": "surrogate",
                "observed": [[a.to_dict(), r] for a, r in self.observed],
                "pending": [a.to_dict() for a in self.pending], "seen": sorted(self.seen), "theta": self.theta,
                "stats": dict(self.stats), "prior": [[a.to_dict(), r] for a, r in self.prior]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.observed = [(Arch.from_dict(a), None if r is None else float(r)) for a, r in state["observed"]]
        self.pending = [Arch.from_dict(a) for a in state["pending"]]
        self.seen = set(state["seen"])
        self.theta = state.get("theta")
        self.stats = dict(state.get("stats", self.stats))
        self.prior, self._prior_xy = [(Arch.from_dict(a), float(r)) for a, r in state.get("prior", [])], None
