"""One copy of the evaluator's large tensors per machine, however many Ray workers read them.

The Ray path (:mod:`densenas.ray_executor`) puts the driver's evaluator into the object store once. Pickled
the default way, every torch tensor in it is rebuilt from bytes inside each worker: a worker holds a private
copy of the proxy images and cached encoder features, and while it unpickles, the bytes as well. Measured:
the keypoint search at 256 x 192 on 1,799 persons ships a 3.6 GB evaluator, each of 2 workers rose to
6.7 GB while starting, and Ray's memory monitor killed them on a 24 GiB machine.

:func:`shared_tensors` reduces every large CPU tensor to a NumPy array over the same bytes. Pickle protocol 5
carries such an array out of band, and Ray hands it back to a reader as a read-only view of the object
store's shared memory (zero-copy, Ray's documented behaviour for NumPy arrays), which ``torch.from_numpy``
wraps without a copy. So every worker on a node reads the one copy in the store.

Written here rather than with Ray's own ``RAY_ENABLE_ZERO_COPY_TORCH_TENSORS``: that switch is process-wide,
makes every tensor contiguous (the cached features are channels-last on purpose, one gather per batch) and
also shares the small tensors a worker writes to, such as BatchNorm buffers. Here only tensors of at
least :data:`MIN_BYTES` are shared, their strides are kept, parameters (``nn.Parameter``) stay private and
writable, and
the reducer is registered only while the evaluator is put.

Shared tensors must not be written in place: the proxy evaluator only reads its images and features (each
batch is a gather, a copy), and a worker given a GPU moves them to the device, a copy of its own.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Iterator

import numpy as np
import torch

MIN_BYTES = 1 << 20  # smaller tensors (weights, BatchNorm buffers, targets of a few images) are copied as before

__all__ = ["MIN_BYTES", "shared_tensors", "reduce_tensor", "rebuild_tensor"]


def _dense_order(t: torch.Tensor) -> list[int] | None:
    """The dimension order in which ``t`` is C-contiguous (``[0, 2, 3, 1]`` for channels-last NCHW), or
    ``None`` when its elements do not fill one dense block (a slice, an expanded view)."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    dense = t.permute(order)
    return order if dense.is_contiguous() else None


def reduce_tensor(t: torch.Tensor) -> tuple[str, Any]:
    """What :func:`shared_tensors` pickles for ``t``: a NumPy view of its bytes (large dense CPU tensors of
    a NumPy dtype) or, for the others, the bytes ``torch.save`` writes (a private copy per worker)."""
    plain = t.layout == torch.strided and not t.is_quantized and t.device.type == "cpu" and not t.requires_grad
    order = _dense_order(t) if plain and t.nbytes >= MIN_BYTES else None
    if order is not None:
        try:
            array = t.permute(order).numpy()
        except TypeError:  # a dtype NumPy lacks (bfloat16, ...): saved whole, like the others
            order = None
    if order is None:
        return "torch", _saved(t)
    return "numpy", (array, order)


def _saved(t: torch.Tensor) -> bytes:
    """``t`` as ``torch.save`` writes it (read back with ``weights_only=True``: tensors and parameters only)."""
    buf = io.BytesIO()
    torch.save(t, buf)
    return buf.getvalue()


def rebuild_tensor(data: tuple[str, Any]) -> torch.Tensor:
    """The tensor :func:`reduce_tensor` reduced; a shared one is a read-only view of the object store."""
    kind, value = data
    if kind == "torch":
        return torch.load(io.BytesIO(value), weights_only=True)
    array, order = value
    with warnings.catch_warnings():  # "The given NumPy array is not writable": shared, read only (see above)
        warnings.simplefilter("ignore", UserWarning)
        dense = torch.from_numpy(array)
    inverse = [order.index(d) for d in range(len(order))]
    return dense.permute(inverse)


@contextlib.contextmanager
def shared_tensors() -> Iterator[None]:
    """Inside: values put into Ray's object store carry their large tensors zero-copy (module docstring).

    ``nn.Parameter`` weights are saved whole, a private copy per worker (a parameter pickles its ``.data``,
    a plain tensor, which the tensor reducer would share otherwise).
    """
    import ray

    ray.util.register_serializer(torch.Tensor, serializer=reduce_tensor, deserializer=rebuild_tensor)
    ray.util.register_serializer(torch.nn.Parameter, serializer=_private, deserializer=rebuild_tensor)
    try:
        yield
    finally:
        ray.util.deregister_serializer(torch.nn.Parameter)
        ray.util.deregister_serializer(torch.Tensor)


def _private(p: torch.nn.Parameter) -> tuple[str, bytes]:
    return "torch", _saved(p)
