"""Zero-cost proxies: score an untrained network from one batch, before any training.

* ``naswot``: Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training", ICML 2021.
  Every ReLU-family unit gives each input of a batch a binary code (active or not); the kernel
  ``K_H[i, j] = N_units - hamming(c_i, c_j)`` counts the units where inputs ``i`` and ``j`` agree, and the
  score is ``log |K_H|``: high when the network separates the inputs of the batch into distinct linear
  regions.
* ``synflow``: Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by iteratively
  conserving synaptic flow", NeurIPS 2020; used as a NAS proxy by Abdelfattah et al., "Zero-Cost Proxies
  for Lightweight NAS", ICLR 2021. With every parameter replaced by its absolute value and an all-ones
  input, ``R = sum(output)`` and the score is ``sum |theta * dR/dtheta|`` (data-free; only the input shapes
  are used).
* ``zen``: Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition", ICCV 2021. With
  Gaussian weights, ``log E|f(x) - f(x + gamma * eps)|`` plus the log of every BatchNorm's scaling factor
  ``sqrt(mean(running_var))``: the network's expressivity.

Every score takes a module and its inputs (``model(*inputs)``, a list of tensors with the batch first) and
knows no task; :meth:`densenas.evaluation.proxy.ProxyTrainer.zero_cost` builds the real candidate and
feeds it the cached encoder features. Each works on a deep copy (the module given is never modified),
draws its randomness from its own generator and runs inside :func:`torch.random.fork_rng`, so it is
deterministic given ``seed`` and leaves the global RNG untouched. The three are written here (a few lines
each) rather than taken from a library: the reference implementations (BayesWatch ``nas-without-training``,
Samsung ``zero-cost-nas``, idstcv ``ZenNAS``) are research repositories, not packages.

:func:`rank_pool` ranks a random pool of a space's archs by such a score, for a warm start
(:meth:`densenas.strategies.base.Strategy.seed_with`; ``strategy.warm_start`` in a search config).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .arch import Arch
from .space import SearchSpace

# Activations f with f(x) > 0 exactly when x > 0: the sign of the output is the unit's binary code, which
# also holds for in-place modules (whose hook sees the input already overwritten).
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
               nn.Hardswish, nn.Mish)


# ------------------------------------------------------------------------------------------ helpers
def _tensors(out: object) -> list[Tensor]:
    """Every tensor of a forward's output (a tensor, or nested tuples / lists / dicts of them)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    raise TypeError(f"the module's output holds a {type(out).__name__}, not tensors")


@contextlib.contextmanager
def _isolated(seed: int, inputs: Sequence[Tensor]) -> Iterator[None]:
    """Run with the global RNG (CPU, and the CUDA devices of ``inputs``) seeded and restored afterwards."""
    cuda = sorted({t.device.index for t in inputs if t.is_cuda and t.device.index is not None})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _batch_stats_mode(net: nn.Module) -> nn.Module:
    """Eval mode (the deployed computation: no dropout, no training-only outputs) except BatchNorm, which
    normalises with the statistics of the batch, as in an untrained network's first forward."""
    net.eval()
    for m in net.modules():
        if isinstance(m, _BatchNorm):
            m.train()
    return net


def _batch_size(inputs: Sequence[Tensor], need: int = 1) -> int:
    if not inputs:
        raise ValueError("no input tensors to score the module on")
    n = int(inputs[0].shape[0])
    if n < need:
        raise ValueError(f"a batch of at least {need} inputs is needed, got {n}")
    return n


# ------------------------------------------------------------------------------------------- scores
@torch.no_grad()
def naswot(model: nn.Module, inputs: Sequence[Tensor], seed: int = 0) -> float:
    """NASWOT score ``log |K_H|`` of ``model`` on the batch ``inputs`` (Mellor et al., ICML 2021).

    Args:
        model: an untrained network; its ReLU-family modules (:data:`ACTIVATIONS`) are the units.
        inputs: ``model(*inputs)``; at least two inputs in the batch.
        seed: seeds any randomness of the forward.

    Returns:
        ``log det K_H`` (``-inf`` when ``K_H`` is singular, e.g. two inputs with the same codes).

    Raises:
        ValueError: no activation module, or a batch of one.
    """
    n = _batch_size(inputs, need=2)
    net = _batch_stats_mode(copy.deepcopy(model))
    kernel = torch.zeros(n, n, dtype=torch.float64, device=inputs[0].device)
    calls = []

    def hook(_m: nn.Module, _inp: object, out: Tensor) -> None:
        if out.shape[0] != n:  # not one code per input of the batch (e.g. an activation on pooled tokens)
            return
        c = (out.detach() > 0).reshape(n, -1).to(kernel)
        kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)  # units where i and j agree: N_units - hamming(c_i, c_j)
        calls.append(c.shape[1])

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, ACTIVATIONS)]
    if not handles:
        raise ValueError(f"naswot: {type(model).__name__} has no ReLU-family module to read codes from")
    try:
        with _isolated(seed, inputs):
            net(*inputs)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ValueError(f"naswot: no activation of {type(model).__name__} ran in its forward")
    sign, logdet = torch.linalg.slogdet(kernel.cpu())
    return float(logdet) if sign > 0 else float("-inf")


def synflow(model: nn.Module, inputs: Sequence[Tensor], seed: int = 0) -> float:
    """SynFlow score ``sum |theta * dR/dtheta|`` with ``|theta|`` weights and all-ones inputs (Tanaka et al.,
    NeurIPS 2020), computed in double precision (products of many weights overflow float32).

    BatchNorm runs in eval mode (its running statistics: identity at initialisation, like the BN-free copy
    of the reference implementation); ``R`` sums every output tensor.

    Args:
        model: an untrained network.
        inputs: tensors whose shapes (batch dimension set to 1) give the all-ones inputs.
        seed: seeds any randomness of the forward.
    """
    _batch_size(inputs)
    net = copy.deepcopy(model).double().eval()
    params = list(net.parameters())
    with torch.no_grad():
        for p in params:
            p.abs_()
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    ones = [torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device) for x in inputs]
    with torch.enable_grad(), _isolated(seed, inputs):
        sum(t.sum() for t in _tensors(net(*ones))).backward()
    return float(sum((p.detach() * p.grad).abs().sum() for p in params if p.grad is not None))


@torch.no_grad()
def zen(model: nn.Module, inputs: Sequence[Tensor], seed: int = 0, gamma: float = 1e-2) -> float:
    """Zen-score (Lin et al., ICCV 2021) of ``model`` around the batch ``inputs``.

    As in the reference: conv / linear weights re-drawn from N(0, 1) (biases 0, norm layers identity),
    BatchNorm on batch statistics, ``log mean_batch sum |f(x) - f(x + gamma * eps)|`` over every output
    tensor plus ``sum log sqrt(mean(running_var))`` over the BatchNorm layers (their momentum is set to 1,
    so ``running_var`` is the variance of the perturbed batch). ``x`` are the given (real) inputs where the
    paper draws Gaussian ones; ``eps`` is N(0, 1).

    Args:
        model: an untrained network.
        inputs: ``model(*inputs)``.
        seed: seeds the weights, the perturbation and any randomness of the forward.
        gamma: size of the perturbation.
    """
    _batch_size(inputs)
    net = _batch_stats_mode(copy.deepcopy(model))
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=m.weight.dtype))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (_BatchNorm, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            m.weight.fill_(1.0)
            m.bias.zero_()
        if isinstance(m, _BatchNorm):
            m.momentum = 1.0
    noisy = [x + gamma * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device) for x in inputs]
    with _isolated(seed, inputs):
        clean, perturbed = _tensors(net(*inputs)), _tensors(net(*noisy))
    diff = sum((a - b).abs().flatten(1).sum(1) for a, b in zip(clean, perturbed)).mean()
    bn = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.running_var is not None]
    return float(torch.log(diff) + sum(0.5 * torch.log(m.running_var.mean()) for m in bn))


def params(model: nn.Module, inputs: Sequence[Tensor], seed: int = 0) -> float:
    """``log10`` of the deployed parameter count (training-only ``aux_heads`` excluded).

    The simplest zero-cost proxy and the baseline every other must beat (Abdelfattah et al., ICLR 2021,
    report it next to synflow and NASWOT); on our real segmentation histories it ranked the trained
    rewards better than the three above (``benchmarks/bench_zerocost.py``). ``inputs`` and ``seed`` are
    unused.
    """
    aux = getattr(model, "aux_heads", None)
    skip = {id(p) for p in aux.parameters()} if isinstance(aux, nn.Module) else set()
    n = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return math.log10(max(n, 1))


Score = Callable[..., float]
SCORES: dict[str, Score] = {"naswot": naswot, "synflow": synflow, "zen": zen, "params": params}


def score(method: str, model: nn.Module, inputs: Sequence[Tensor], seed: int = 0) -> float:
    """The zero-cost score ``method`` (a key of :data:`SCORES`) of ``model`` on ``inputs``.

    Raises:
        ValueError: unknown ``method`` (names the options).
    """
    if method not in SCORES:
        raise ValueError(f"unknown zero-cost proxy {method!r}; available: {sorted(SCORES)}")
    return SCORES[method](model, inputs, seed=seed)


# ----------------------------------------------------------------------------------------- ranking
def rank_pool(space: SearchSpace, score_fn: Callable[[Arch], float], pool_size: int, rng: np.random.Generator,
              log: Callable[[str], None] | None = None) -> list[tuple[Arch, float]]:
    """Sample ``pool_size`` distinct valid archs of ``space`` and rank them by ``score_fn``, best first.

    An arch whose score raises or is not finite is ranked last (score ``-inf``, sampling order among
    them) and its error is logged; the ranking itself never fails for one candidate. Ties keep the
    sampling order.

    Args:
        space: where the archs come from (``space.sample(rng)``).
        score_fn: ``arch -> float``, higher is better.
        pool_size: distinct archs wanted (fewer when the space runs out: logged).
        rng: the sampling generator (advanced here; pass one of its own to leave a strategy's untouched).
        log: receives the failures and a short-pool note.
    """
    say = log or (lambda _msg: None)
    pool: dict[str, Arch] = {}
    tries = 0
    while len(pool) < pool_size and tries < 50 * max(pool_size, 1):
        tries += 1
        arch = space.sample(rng)
        if arch.key not in pool and space.is_valid(arch):
            pool[arch.key] = arch
    if len(pool) < pool_size:
        say(f"rank_pool: only {len(pool)} distinct valid archs of space {space.name!r} in {tries} samples")
    scored = []
    for i, arch in enumerate(pool.values()):
        try:
            value = float(score_fn(arch))
            error = None if math.isfinite(value) else f"score is {value}"
        except Exception as e:  # noqa: BLE001 - one bad candidate must not end the ranking
            error = f"{type(e).__name__}: {e}"
        if error is not None:
            say(f"rank_pool: {arch} ranked last: {error}")
            value = float("-inf")
        scored.append((error is not None, -value, i, arch))
    scored.sort(key=lambda t: t[:3])
    return [(arch, -neg) for _, neg, _, arch in scored]
