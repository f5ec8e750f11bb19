"""A second memory space on a machine with one: catches host/device mixes on the CPU.

On a CUDA machine, data an evaluator forgot to move fails at its first use ("Input type
(torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same") — but only there. On a
CPU-only machine (CI, our 2-core development machines) host and device are the same memory, so such a bug
passes every test and is found by the first user with a GPU, as the IR-NAS supernet's was.

:class:`DeviceMixCheck` is a :class:`torch.overrides.TorchFunctionMode` that emulates CUDA's rules on the
CPU. Run the code under test with the evaluator's device set to :data:`EMULATED` (``cpu:0``); while the
mode is active every tensor's storage gets a side:

* **host**: made by a factory without a ``device`` (``torch.from_numpy``, ``torch.tensor(data)``,
  ``torch.randperm(n)``), by ``.cpu()`` / ``.to("cpu")``, or by ops on host tensors only;
* **device**: made by ``.to(EMULATED)`` (which copies, as a real host-to-device move does, so the host
  original stays host), by a factory with ``device=EMULATED``, or by an op with a device input. A tensor on
  the device reports ``.device == cpu:0``, so ``x.to(y.device)`` follows ``y`` as it would on CUDA.

An op that takes a device tensor and a host tensor of one or more dimensions raises
:class:`DeviceMixError` naming the op and both shapes (CUDA lets 0-dim CPU tensors in, and so does the
check). So do ``host_tensor[device_index]`` and ``device_tensor.numpy()``. Generators are not checked: a
``torch.Generator(device="cpu:0")`` reports the plain CPU, so the emulation cannot tell it from a host one.
Tensors made before the mode, or by autograd and C++ internals (gradients, ``torch.load``), have no side and
are never reported: the check has no false alarms from them, at the price of not seeing a mix they take
part in.

Nothing here is used by a search: tests run tasks, evaluators and supernets under it
(``tests/test_device_mix.py``). Writing our own: PyTorch ships no emulated second device for CPU-only
machines (the fake-tensor and ``meta`` devices carry no values, so a run stops at the first metric).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.utils.checkpoint
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["DeviceMixCheck", "DeviceMixError", "EMULATED"]

EMULATED = torch.device("cpu", 0)
"""The device an evaluator is given under :class:`DeviceMixCheck`: the CPU, seen as a separate device."""

HOST, DEVICE = "host", "device"

# moves and copies: allowed between the sides (they are how data crosses)
_MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu, torch.Tensor.copy_, torch.Tensor.type_as}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_,
             torch.Tensor.index_put}
# host reads of a device tensor are legal on CUDA (they synchronise); numpy() is not
_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
          torch.Tensor.__bool__, torch.Tensor.__len__, torch.Tensor.__repr__, torch.Tensor.__format__,
          torch.Tensor.dim, torch.Tensor.size, torch.Tensor.numel, torch.Tensor.data_ptr,
          torch.Tensor.untyped_storage, torch.Tensor.is_floating_point, torch.Tensor.element_size,
          torch.Tensor.stride, torch.Tensor.is_contiguous, torch.Tensor.storage_offset,
          torch._has_compatible_shallow_copy_type, torch.is_same_size, torch.Tensor.__deepcopy__,
          torch.Tensor.__reduce_ex__, torch.Tensor.__setstate__, torch.Tensor.requires_grad_,
          torch.Tensor.register_hook}
# the reads among them that copy a device tensor's values to the host (a synchronisation on CUDA)
_SYNC_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
               torch.Tensor.__bool__}


_HOST_FACTORIES = ("from_numpy", "frombuffer", "load")


class DeviceMixError(RuntimeError):
    """An op mixed host and device tensors (it would fail on CUDA)."""


def _name(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


def _is_emulated(device: Any) -> bool | None:
    """True for the emulated device, False for the host CPU, None when ``device`` names no CPU device."""
    if device is None:
        return None
    if isinstance(device, int):  # tensor.to(0) / cuda(0): a CUDA index, here the emulated device
        return True
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        return None
    if d.type == "cuda":
        return True
    if d.type != "cpu":
        return None
    return d.index is not None


def _target_of_to(args: tuple, kwargs: dict) -> bool | str | None:
    """Where ``Tensor.to(*args, **kwargs)`` sends its tensor: True device, False host, None unchanged,
    ``"other"`` the side of the tensor given (``x.to(y)``)."""
    if "device" in kwargs:
        return _is_emulated(kwargs["device"])
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            return "other"
        if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            return _is_emulated(a)
    return None


class DeviceMixCheck(TorchFunctionMode):
    """Emulate a separate device memory on the CPU and raise at the first host/device mix (see module).

    Use as a context manager around building and running the code under test, with :data:`EMULATED` as
    its device::

        with DeviceMixCheck():
            trainer = ProxyTrainer(task, space, encoder, shapes, cfg, device=EMULATED)
            trainer.evaluate(arch)

    Attributes:
        checked: ops checked while active (a test can assert the check saw the code run).
        host_reads: one line per read of a device tensor's values by the host (``.item()``, ``.tolist()``,
            ``float()`` / ``int()`` / ``bool()``, a move to the host): each is a synchronisation on CUDA, and
            a step that does one cannot be captured as a CUDA graph. Ops that synchronise inside C++
            (``nonzero``, boolean-mask indexing) are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self._side = WeakIdKeyDictionary()  # untyped storage -> HOST / DEVICE
        self.checked = 0
        self.host_reads: list[str] = []

    def __enter__(self) -> "DeviceMixCheck":
        # ``Tensor.device`` is a C getter that torch-function modes do not see: shadow it on the Python
        # class while the check is active, so a device tensor reports the emulated device
        base_get = torch._C.TensorBase.device.__get__
        check = self

        def device(t: torch.Tensor) -> torch.device:
            dev = base_get(t)
            return EMULATED if dev.type == "cpu" and check.side(t) == DEVICE else dev

        self._saved_device = torch.Tensor.__dict__.get("device")
        torch.Tensor.device = property(device)  # type: ignore[assignment]
        # gradient checkpointing compares the device of each recomputed tensor with the original's; a
        # tensor's side is set after the op that makes it, so the two can differ in the emulated index
        # alone: compare device types while the check is active (torch's private table, restored on exit)
        table = torch.utils.checkpoint._allowed_determinism_checks_to_fns
        self._saved_meta = table["default"]
        table["default"] = lambda x: {"shape": x.shape, "dtype": x.dtype, "device": x.device.type}
        # factories torch-function modes never see (torch.overrides.get_ignored_functions): what they make
        # is host memory
        self._saved_factories = {name: getattr(torch, name) for name in _HOST_FACTORIES}
        for name, fn in self._saved_factories.items():
            setattr(torch, name, self._host_factory(fn))
        return super().__enter__()

    def _host_factory(self, fn: Callable) -> Callable:
        def made_on_host(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            if kwargs.get("map_location") in (None, "cpu", torch.device("cpu")):
                self._mark(out, HOST)
            return out
        return made_on_host

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self._saved_factories.items():
            setattr(torch, name, fn)
        torch.utils.checkpoint._allowed_determinism_checks_to_fns["default"] = self._saved_meta
        if self._saved_device is None:
            del torch.Tensor.device
        else:
            torch.Tensor.device = self._saved_device  # type: ignore[assignment]
        return super().__exit__(*exc)

    # ------------------------------------------------------------------ sides
    def side(self, t: torch.Tensor) -> str | None:
        """``"host"``, ``"device"`` or ``None`` (made outside the check's view)."""
        try:
            return self._side.get(t.untyped_storage())
        except (RuntimeError, NotImplementedError, TypeError):
            return None

    def _mark(self, out: Any, side: str | None) -> None:
        if side is None:
            return
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                try:
                    self._side[t.untyped_storage()] = side
                except (RuntimeError, NotImplementedError, TypeError):
                    pass

    # ---------------------------------------------------------------- dispatch
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.grad.__get__:  # autograd made it: it lives where its parameter does
            grad = func(*args)
            if isinstance(grad, torch.Tensor) and self.side(grad) is None:
                self._mark(grad, self.side(args[0]))
            return grad
        if func in _READS or getattr(func, "__name__", "") in ("__get__", "__set__", "__delete__"):
            if func in _SYNC_READS and args and isinstance(args[0], torch.Tensor) and self.side(args[0]) == DEVICE:
                self.host_reads.append(f"{_name(func)} of a device tensor {tuple(args[0].shape)}")
            return func(*args, **kwargs)
        self.checked += 1
        if func in _MOVES:
            return self._move(func, args, kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        sides = [self.side(t) for t in tensors]
        if func in _INDEXING:
            self._check_index(func, tensors, sides)
        elif func is torch.Tensor.numpy:
            if sides and sides[0] == DEVICE:
                raise DeviceMixError(f"Tensor.numpy() of a device tensor {tuple(tensors[0].shape)}: can't "
                                     f"convert a CUDA tensor to numpy; call .cpu() first")
        else:
            self._check_mix(func, tensors, sides)
        explicit = kwargs.get("device", None)
        out = func(*args, **kwargs)
        if explicit is not None and _is_emulated(explicit) is not None:
            self._mark(out, DEVICE if _is_emulated(explicit) else HOST)
        elif DEVICE in sides:
            self._mark(out, DEVICE)
        elif not tensors or any(s == HOST and t.dim() > 0 for t, s in zip(tensors, sides)):
            self._mark(out, HOST)  # (a 0-dim host tensor decides nothing: CUDA lets it into device ops)
        return out

    def _check_mix(self, func: Callable, tensors: list[torch.Tensor], sides: list[str | None]) -> None:
        dev = next((t for t, s in zip(tensors, sides) if s == DEVICE), None)
        host = next((t for t, s in zip(tensors, sides) if s == HOST and t.dim() > 0), None)
        if dev is not None and host is not None:
            raise DeviceMixError(
                f"{_name(func)} mixes a device tensor {tuple(dev.shape)} {dev.dtype} with a host tensor "
                f"{tuple(host.shape)} {host.dtype}: on CUDA this fails with 'Expected all tensors to be on "
                f"the same device'; move the host data to the evaluator's device once, where it is held")

    def _check_index(self, func: Callable, tensors: list[torch.Tensor], sides: list[str | None]) -> None:
        if sides and sides[0] == HOST and any(s == DEVICE for s in sides[1:]):
            raise DeviceMixError(f"{_name(func)}: a host tensor {tuple(tensors[0].shape)} indexed with a device "
                                 f"tensor (CUDA: 'indices should be either on cpu or on the same device')")

    def _move(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        src = args[0]
        side = self.side(src)
        if func is torch.Tensor.cpu:
            target: Any = False
        elif func is torch.Tensor.cuda:
            target = True
        elif func is torch.Tensor.copy_:  # in place: the destination keeps its side
            return func(*args, **kwargs)
        elif func is torch.Tensor.type_as:
            target = "other"
        else:
            target = _target_of_to(args, kwargs)
        if target == "other":
            other = args[1] if len(args) > 1 else kwargs.get("other")
            target = {DEVICE: True, HOST: False}.get(self.side(other)) if isinstance(other, torch.Tensor) else None
        if func is torch.Tensor.cuda:  # no CUDA here: the same move, spelled for the emulated device
            out = src.to(EMULATED, non_blocking=bool(kwargs.get("non_blocking", False)))
        else:
            out = func(*args, **kwargs)
        if target is None:  # dtype / memory-format change only: the side follows the source
            if out is not src and side is not None:
                self._mark(out, side)
            return out
        want = DEVICE if target else HOST
        if side == DEVICE and want == HOST:
            self.host_reads.append(f"{_name(func)} of a device tensor {tuple(src.shape)} to the host")
        if side is None and out is src and want == HOST:  # x.to(y.device) with y of unknown side: unknown
            return out
        if side is not None and side != want and out is src:
            # the CPU returns the same tensor; a real move copies, leaving the original where it was
            out = src.clone()
        elif side is None and out is src and want == DEVICE:
            out = src.clone()
        self._mark(out, want)
        return out
