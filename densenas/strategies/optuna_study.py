"""Optuna samplers as ask/tell strategies (``strategy=dict(type="optuna", sampler="TPESampler")``).

Optuna (Akiba, Sano, Yanase, Ohta & Koyama, "Optuna: A Next-generation Hyperparameter Optimization
Framework", KDD 2019) runs here through its ask-and-tell interface on an in-memory study: every
decision of the space is one categorical parameter holding the *option index* (options may be values
optuna cannot store); :meth:`OptunaStrategy.suggest` asks a trial, :meth:`OptunaStrategy.observe`
tells it. Any class of :mod:`optuna.samplers` can be named, notably the Tree-structured Parzen
Estimator (Bergstra, Bardenet, Bengio & Kegl, "Algorithms for Hyper-Parameter Optimization",
NeurIPS 2011) and, for several objectives (reward and model cost), NSGA-II (Deb, Pratap, Agarwal &
Meyarivan, "A Fast and Elitist Multiobjective Genetic Algorithm: NSGA-II", IEEE TEVC 2002).

We use optuna's samplers rather than our own; what we add is the bridge. Failed results become FAIL
trials (samplers skip them); archs the strategy never proposed (warm start, the loop's history) become
finished trials. A proposal the space rejects, or (``dedup``) one already seen, is not handed out: where
the sampler models constraints (TPE, NSGA-II, GP) it is told as an *infeasible* trial through
``constraints_func``, so the sampler learns to avoid it -- told as FAIL instead, TPE re-proposed the
same invalid or known archs thousands of times on the 711-of-4096 TransNAS-Bench-101 table.

Resume is bit-for-bit because proposals are a function of the trials alone: before every ask and tell
the study gets a *fresh* sampler seeded from ``(seed, number of trials so far)``, and the samplers keep
their state (NSGA-II generations and parent caches, CMA-ES optimizers) in the trials' and the study's
system attributes, which :meth:`OptunaStrategy.state_dict` stores as plain data and
:meth:`OptunaStrategy.load_state_dict` replays into a new study (where trial ids equal trial numbers).
"""
from __future__ import annotations

import inspect
import json
import math
import warnings
from typing import Any, Mapping

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.samplers._base import _CONSTRAINTS_KEY  # the system attr where samplers keep constraints
from optuna.trial import FrozenTrial, TrialState, create_trial

from ..arch import Arch, InvalidArch
from ..result import Result
from ..space import SearchSpace
from .base import Strategy

_DIRECTIONS = ("maximize", "minimize")
INVALID_ATTR = "densenas_invalid"  # user attr of a trial whose arch the space rejected
DUPLICATE_ATTR = "densenas_duplicate"  # user attr of a trial whose arch was already seen


def invalid_constraint(trial: FrozenTrial) -> list[float]:
    """The ``constraints_func`` given to samplers: violation 1 for an invalid or already seen arch."""
    return [1.0 if trial.user_attrs.get(INVALID_ATTR) or trial.user_attrs.get(DUPLICATE_ATTR) else 0.0]


def available_samplers() -> list[str]:
    """Names of the concrete sampler classes in :mod:`optuna.samplers` (what ``sampler=`` accepts)."""
    return sorted(name for name, cls in vars(optuna.samplers).items()
                  if inspect.isclass(cls) and issubclass(cls, optuna.samplers.BaseSampler)
                  and not inspect.isabstract(cls))


def parse_objectives(objectives: Any) -> list[tuple[str, str]]:
    """Normalise objectives to ``[(key, direction), ...]``.

    Args:
        objectives: ``None`` (maximise ``reward``), or a list of ``(key, direction)`` pairs, dicts
            ``{"key" (or "name"): ..., "direction": ...}`` or strings; a bare ``"reward"`` means
            maximise, any other key needs its direction spelt out.

    Raises:
        ValueError: an item of another form, a missing or unknown direction, an empty list.
    """
    if objectives is None:
        return [("reward", "maximize")]
    if isinstance(objectives, (str, Mapping)):
        objectives = [objectives]
    out = []
    for item in objectives:
        if isinstance(item, str):
            key, direction = item, None
        elif isinstance(item, Mapping):
            key, direction = item.get("key", item.get("name")), item.get("direction")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            key, direction = item
        else:
            raise ValueError(f"objective {item!r}: expected (key, direction), a dict or a string")
        if not isinstance(key, str) or not key:
            raise ValueError(f"objective {item!r}: the key must be a non-empty string")
        direction = "maximize" if direction is None and key == "reward" else direction
        if direction is None or str(direction).lower() not in _DIRECTIONS:
            raise ValueError(f"objective {key!r}: direction must be one of {list(_DIRECTIONS)}, "
                             f"got {direction!r} (e.g. ({key!r}, 'minimize'))")
        out.append((key, str(direction).lower()))
    if not out:
        raise ValueError("objectives is empty: give at least one, e.g. [('reward', 'maximize')]")
    return out


def _plain(attrs: Mapping[str, Any], what: str) -> dict[str, Any]:
    """JSON-plain copy of optuna attrs (tuples become lists); raises on anything else."""
    try:
        return json.loads(json.dumps(dict(attrs)))
    except (TypeError, ValueError) as e:
        raise TypeError(f"optuna {what} are not plain data, cannot be stored: {e}") from None


class OptunaStrategy(Strategy):
    """Any optuna sampler, driven ask/tell over the option indices of the space's decisions.

    A proposal the space rejects (``space.is_valid`` false, e.g. not in a benchmark table) or, with
    ``dedup``, an arch already proposed or observed is finished as infeasible (samplers with
    ``constraints_func``) or FAIL (the others) and the study is asked again; after ``max_invalid``
    invalid or ``dedup_tries`` seen proposals a ``space.sample`` draw (unseen where 100 draws find
    one) is enqueued and asked, so that trial still holds its params (counted in ``stats``).

    Sampler notes (optuna 4.6): each ask uses a fresh sampler seeded from the trial count, so every
    sampler resumes bit-for-bit (tested: TPE, random, NSGA-II, CMA-ES, QMC, brute force). CmaEsSampler
    and QMCSampler do not model categorical parameters: on these spaces they draw every decision with
    their independent (random) sampler. QMCSampler with ``scramble=True`` keys its sequence position
    on the seed, so the per-ask seed restarts its sequence (keep the default ``scramble=False``).
    GPSampler loses its kernel warm start between asks (still deterministic; seconds per ask).
    BruteForceSampler's ``study.stop()`` once every arch is tried is ignored. A sampler without a
    ``seed`` argument (PartialFixedSampler) is built from ``sampler_kwargs`` alone. For parallel
    workers, ``sampler_kwargs={"constant_liar": True}`` makes TPE model archs still running.

    Cost: rejected proposals are trials too; on the TransNAS-Bench-101 table (711 of 4096 archs
    valid) 100 distinct TPE queries make ~800 trials and a proposal then takes ~0.5-1 s (2 busy
    cores), the state ~170 kB of JSON -- nothing next to training a candidate, but it adds up in
    tabular benchmarks.

    Args:
        space: the search space; each of its decisions becomes a categorical parameter.
        seed: seeds the numpy RNG (fallback draws) and, with the trial count, every sampler.
        sampler: name of a class of :mod:`optuna.samplers` (see :func:`available_samplers`).
        sampler_kwargs: constructor arguments of that sampler, not ``seed`` (the strategy sets it).
            ``warn_independent_sampling`` defaults to ``False`` (it would warn on every ask); giving
            ``constraints_func`` (``None`` too) turns rejected proposals into FAIL trials.
        objectives: see :func:`parse_objectives`; more than one makes a multi-objective study. A
            value is ``result.reward`` (key ``"reward"``), else ``result.cost[key]``, else
            ``result.metrics[key]``; a non-finite value makes the trial FAIL.
        max_invalid: invalid proposals per :meth:`suggest` before the random fallback.
        dedup: never hand out an arch already proposed or observed (unless the fallback must).
        dedup_tries: already seen proposals per :meth:`suggest` before the random fallback.

    Raises:
        ValueError: unknown sampler name (lists the available ones), ``seed`` in ``sampler_kwargs``,
            arguments the sampler rejects, bad objectives.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, sampler: str = "TPESampler",
                 sampler_kwargs: Mapping[str, Any] | None = None, objectives: Any = None,
                 max_invalid: int = 100, dedup: bool = True, dedup_tries: int = 5):
        super().__init__(space, seed)
        names = available_samplers()
        if sampler not in names:
            raise ValueError(f"unknown optuna sampler {sampler!r}; available: {names}")
        kwargs = dict(sampler_kwargs or {})
        if "seed" in kwargs:
            raise ValueError("sampler_kwargs must not hold 'seed': the strategy seeds the sampler "
                             "from its own seed (pass seed= to the strategy)")
        self.sampler_name = sampler
        self._sampler_cls = getattr(optuna.samplers, sampler)
        params = inspect.signature(self._sampler_cls).parameters
        self._seeded = "seed" in params
        if "warn_independent_sampling" in params:
            kwargs.setdefault("warn_independent_sampling", False)
        self._constrained = "constraints_func" in params and "constraints_func" not in kwargs
        self.sampler_kwargs = kwargs
        self.objectives = parse_objectives(objectives)
        self.max_invalid = max(0, int(max_invalid))
        self.dedup = bool(dedup)
        self.dedup_tries = max(0, int(dedup_tries))
        self._decisions = list(space.decisions())
        self._dists = {d.name: CategoricalDistribution(list(range(len(d)))) for d in self._decisions}
        if optuna.logging.get_verbosity() < optuna.logging.WARNING:  # one INFO line per trial otherwise
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:  # fail early on bad sampler_kwargs; experimental-feature warnings show once, here
            self._sampler_cls(**kwargs, **({"seed": 0} if self._seeded else {}))
        except TypeError as e:
            raise ValueError(f"optuna sampler {sampler}: bad sampler_kwargs {kwargs}: {e}") from None
        self.stats = {"invalid": 0, "duplicate": 0, "fallback": 0}
        self._seen: set[str] = set()
        self._pending: dict[str, list[int]] = {}  # arch key -> numbers of trials asked, not told
        self.study = self._new_study()

    # ------------------------------------------------------------------------------- the study
    def _new_study(self) -> optuna.Study:
        return optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=self._sampler(0),
                                   directions=[d for _, d in self.objectives])

    def _sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        """A fresh sampler seeded from ``(seed, n_trials)``: proposals depend on the trials alone."""
        kwargs = dict(self.sampler_kwargs)
        if self._constrained:
            kwargs["constraints_func"] = invalid_constraint
        if self._seeded:
            kwargs["seed"] = int(np.random.SeedSequence([int(self.seed), n_trials]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._sampler_cls(**kwargs)

    def _reseed(self) -> None:
        self.study.sampler = self._sampler(len(self.study.get_trials(deepcopy=False)))

    def _tell(self, number: int, values: list[float] | None) -> None:
        self._reseed()
        try:
            if values is None:
                self.study.tell(number, state=TrialState.FAIL)
            else:
                self.study.tell(number, values if len(values) > 1 else values[0])
        except RuntimeError as e:  # BruteForceSampler calls study.stop() outside optimize() once
            if "Study.stop" not in str(e):  # every arch was tried; the trial is stored before that
                raise

    def _values(self, result: Result) -> list[float] | None:
        """The objective values of ``result``; ``None`` (a FAIL trial) when failed or not finite."""
        if not result.ok:
            return None
        values = []
        for key, _ in self.objectives:
            if key == "reward":
                v = result.reward
            elif key in result.cost:
                v = result.cost[key]
            elif key in result.metrics:
                v = result.metrics[key]
            else:
                raise ValueError(f"objective {key!r} is not in the result: it has 'reward', cost keys "
                                 f"{sorted(result.cost)} and metrics keys {sorted(result.metrics)}")
            v = math.nan if v is None else float(v)
            if not math.isfinite(v):
                return None
            values.append(v)
        return values

    # ---------------------------------------------------------------------------------- ask/tell
    def suggest(self) -> Arch:
        """Ask until a trial gives a valid, unseen arch; see the class docstring for the fallback."""
        invalid = duplicate = 0
        while True:
            fallback = invalid >= self.max_invalid or duplicate >= self.dedup_tries
            if fallback:
                arch = self.space.sample(self.rng)
                for _ in range(100 if self.dedup else 0):
                    if arch.key not in self._seen:
                        break
                    arch = self.space.sample(self.rng)
                names = [d.name for d in self._decisions]
                self.study.enqueue_trial(dict(zip(names, arch.indices(self._decisions))))
                self.stats["fallback"] += 1
            self._reseed()
            trial = self.study.ask()
            arch = self.space.from_indices(
                [trial.suggest_categorical(d.name, list(range(len(d)))) for d in self._decisions])
            if not self.space.is_valid(arch):
                invalid += 1
                self._reject(trial, INVALID_ATTR, "invalid")
            elif self.dedup and not fallback and arch.key in self._seen:
                duplicate += 1
                self._reject(trial, DUPLICATE_ATTR, "duplicate")
            else:
                self._seen.add(arch.key)
                self._pending.setdefault(arch.key, []).append(trial.number)
                return arch

    def _reject(self, trial: optuna.Trial, attr: str, counter: str) -> None:
        """Finish a trial whose arch is not handed out: infeasible if the sampler models constraints."""
        self.stats[counter] += 1
        if not self._constrained:
            self._tell(trial.number, None)
            return
        trial.set_user_attr(attr, True)
        # values of an infeasible trial: TPE and NSGA-II rank those by violation only, GPSampler fits
        # them, so give the worst feasible value so far (0 before any)
        done = [t.values for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if not invalid_constraint(t)[0]]
        self._tell(trial.number, [(min if d == "maximize" else max)((v[i] for v in done), default=0.0)
                                  for i, (_, d) in enumerate(self.objectives)])

    def observe(self, arch: Arch, result: Result) -> None:
        """Tell the pending trial that proposed ``arch``, else add a finished trial for it.

        Raises:
            InvalidArch: ``arch`` is of another space (names the field).
            ValueError: an objective key is in neither the result's cost nor its metrics.
        """
        values = self._values(result)
        waiting = self._pending.get(arch.key)
        if waiting:
            number = waiting.pop(0)
            if not waiting:
                del self._pending[arch.key]
            self._tell(number, values)
            return
        if arch.space != self.space.name:
            raise InvalidArch(f"arch is for space {arch.space!r}, not {self.space.name!r}")
        idx = arch.indices(self._decisions)
        feasible = self._constrained and values is not None
        self.study.add_trial(create_trial(
            state=TrialState.FAIL if values is None else TrialState.COMPLETE, values=values,
            params={d.name: i for d, i in zip(self._decisions, idx)}, distributions=self._dists,
            system_attrs={_CONSTRAINTS_KEY: [0.0]} if feasible else None))
        self._seen.add(arch.key)

    def pending(self) -> list[int]:
        """Numbers of the trials asked and not yet told, oldest first."""
        return sorted(n for numbers in self._pending.values() for n in numbers)

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Every trial in order (params as option indices in decision order, state, values, non-empty
        attrs), the pending trials, the study's attrs and the counters: plain data only."""
        study, trials = self.study, []
        for t in study.get_trials(deepcopy=False):
            row: dict[str, Any] = {"params": [t.params.get(d.name) for d in self._decisions],
                                   "state": t.state.name}
            if t.values is not None:
                row["values"] = [float(v) for v in t.values]
            for key, attrs in (("system_attrs", t.system_attrs), ("user_attrs", t.user_attrs)):
                if attrs:
                    row[key] = _plain(attrs, f"{key} of trial {t.number}")
            trials.append(row)
        return {
            **super().state_dict(),
            "type": "optuna",
            "seed": int(self.seed),
            "space": self.space.name,
            "decisions": [[d.name, len(d)] for d in self._decisions],
            "sampler": self.sampler_name,
            "objectives": [list(o) for o in self.objectives],
            "trials": trials,
            "pending": self.pending(),
            "study_system_attrs": _plain(study._storage.get_study_system_attrs(study._study_id),
                                         "study system_attrs"),
            "study_user_attrs": _plain(study.user_attrs, "study user_attrs"),
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the study by replaying the stored trials into a new in-memory study.

        The sampler may differ from the one that wrote the state (e.g. TPE continuing a random
        search); pending trials stay tellable, so :meth:`observe` of their archs finishes them.

        Raises:
            ValueError: the state is for another space (decisions) or other objectives.
        """
        decisions = [[d.name, len(d)] for d in self._decisions]
        if state.get("space") != self.space.name or [list(d) for d in state["decisions"]] != decisions:
            raise ValueError(f"state is for space {state.get('space')!r} with decisions "
                             f"{state.get('decisions')}, not {self.space.name!r} with {decisions}")
        if [tuple(o) for o in state["objectives"]] != self.objectives:
            raise ValueError(f"state is for objectives {state['objectives']}, not {self.objectives}")
        super().load_state_dict(state)
        self.seed = int(state["seed"])  # the sampler seeds derive from it
        study = self._new_study()
        for key, value in state["study_system_attrs"].items():
            study._storage.set_study_system_attr(study._study_id, key, value)
        for key, value in state["study_user_attrs"].items():
            study.set_user_attr(key, value)
        for t in state["trials"]:
            params = {d.name: int(i) for d, i in zip(self._decisions, t["params"]) if i is not None}
            trial = create_trial(
                state=TrialState[t["state"]], values=t.get("values"), params=params,
                distributions={k: self._dists[k] for k in params},
                system_attrs=t.get("system_attrs"), user_attrs=t.get("user_attrs"))
            if self._constrained and trial.state == TrialState.COMPLETE and \
                    _CONSTRAINTS_KEY not in trial.system_attrs:  # written by an unconstrained sampler
                trial.system_attrs[_CONSTRAINTS_KEY] = invalid_constraint(trial)
            study.add_trial(trial)
        self.study = study
        trials = study.get_trials(deepcopy=False)
        keys = [self.space.from_indices([t.params[d.name] for d in self._decisions]).key
                if len(t.params) == len(self._decisions) else None for t in trials]
        self._seen, self._pending = {k for k in keys if k is not None}, {}
        for number in state["pending"]:
            self._pending.setdefault(keys[number], []).append(int(number))
        self.stats = {**self.stats, **state["stats"]}
