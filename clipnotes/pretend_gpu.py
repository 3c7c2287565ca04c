"""A pretend GPU on a CPU-only machine: tensors on it refuse to meet CPU tensors, as CUDA's do.

The paper check runs every chapter on it (``CLIPNOTES_PRETEND_GPU=1``), and so can you before
taking your own code to Colab::

    with pretend_gpu() as gpu:
        bundle = create_paper("ViT-B-32-quickgelu", None, gpu)   # your code, device=gpu

Issue 17's device rule (cached features on the CPU, moved to the model's device where they
meet it, results back on the CPU before NumPy) is invisible on a CPU: every tensor is on the
CPU, so a forgotten ``.to(device)`` runs fine here and crashes on a reader's Colab GPU.

Inside ``pretend_gpu()``, the device :data:`GPU` plays the GPU. A tensor sent there (``.to``,
``Module.to``, or a factory called with ``device=GPU``) becomes a :class:`GpuTensor`: its
``device`` reads ``meta`` (torch's data-less device, which needs no driver — a real ``cuda``
device cannot be named on a machine without one), it computes on a CPU copy of its values, and
an operation that mixes it with a CPU tensor raises :class:`DeviceMixError` naming the operation,
where CUDA would raise. What CUDA allows is allowed: a 0-dim CPU tensor (a Python-like scalar),
CPU index tensors for advanced indexing, and copies
(``copy_``) between the two. ``.numpy()`` fails as it does on a GPU.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

GPU = torch.device("meta")
_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
             torch.ops.aten._index_put_impl_.default}
_COPIES = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}   # copies cross devices, as on CUDA


class DeviceMixError(RuntimeError):
    """A CPU tensor met a tensor on the pretend GPU."""


def _on_gpu(device: Any) -> bool:
    return device is not None and torch.device(device).type == GPU.type


def _wrap(out: Any) -> Any:
    return tree_map(lambda t: GpuTensor(t) if type(t) is torch.Tensor or type(t) is torch.nn.Parameter else t, out)


def _values(t: Any) -> Any:
    """The CPU values behind a pretend-GPU tensor. A plain ``meta`` tensor has none: autograd's engine
    makes those itself (zero gradients for unused outputs, on the device its records name), so zeros."""
    if isinstance(t, GpuTensor):
        return t.elem
    if isinstance(t, torch.Tensor) and t.device.type == GPU.type:
        return torch.zeros(t.shape, dtype=t.dtype)
    return t


class GpuTensor(torch.Tensor):
    """A CPU tensor that reports the pretend GPU as its device and is kept apart from CPU tensors."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> "GpuTensor":
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=GPU, requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"GpuTensor({self.elem!r})"

    def __tensor_flatten__(self):                   # lets detach / Parameter / deepcopy see inside
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return GpuTensor(inner["elem"])

    def tolist(self) -> Any:                        # CUDA allows these (a copy to the host)
        return self.elem.tolist()

    def __format__(self, spec: str) -> str:
        return self.elem.__format__(spec)

    def __reduce_ex__(self, protocol: int) -> Any:  # saved as its values, as torch.save keeps a CUDA tensor's
        return self.elem.detach().__reduce_ex__(protocol)

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert a GPU tensor to numpy: call .cpu() first (pretend GPU)")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        checked = (args[:1] + args[2:], kwargs) if func in _INDEXING else (() if func in _COPIES else (args, kwargs))
        cpu = [t for t in tree_flatten(checked)[0]
               if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0]
        if cpu:
            raise DeviceMixError(f"{func}: a CPU tensor of shape {tuple(cpu[0].shape)} met a GPU tensor "
                                 "(move it to the model's device first)")
        leaving = func is torch.ops.aten._to_copy.default and "device" in kwargs and not _on_gpu(kwargs["device"])
        if _on_gpu(kwargs.get("device")):
            kwargs = {**kwargs, "device": torch.device("cpu")}
        args, kwargs = tree_map(_values, (args, kwargs))
        out = func(*args, **kwargs)
        return out if leaving else _wrap(out)


def _target(func, args, kwargs) -> torch.device | None:
    """The device a ``Tensor.to`` call or a factory names, if any."""
    if func is torch.Tensor.to:
        for a in list(args[1:]) + [kwargs.get("device")]:
            if isinstance(a, (str, torch.device)):
                return torch.device(a)
            if isinstance(a, torch.Tensor):
                return a.device
        return None
    d = kwargs.get("device")
    return torch.device(d) if isinstance(d, (str, torch.device)) else None


class _PretendGpuMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _on_gpu(_target(func, args, kwargs)):
            return func(*args, **kwargs)
        if func is not torch.Tensor.to:                      # a factory: make it on the CPU, then wrap
            out = func(*args, **{**kwargs, "device": torch.device("cpu")})
            made = any(isinstance(t, torch.Tensor) for t in tree_flatten(out)[0])
            return _wrap(out) if made else func(*args, **kwargs)     # e.g. Module.to's argument parser
        src = args[0]
        dtype = next((a for a in list(args[1:]) + [kwargs.get("dtype")] if isinstance(a, torch.dtype)), None)
        values = src.elem if isinstance(src, GpuTensor) else src
        values = values.to(dtype) if dtype is not None else values
        if isinstance(src, GpuTensor) and values is src.elem:
            return src
        with torch.no_grad():
            out = GpuTensor(values.detach().clone())
        return out.requires_grad_() if src.requires_grad else out


@contextlib.contextmanager
def pretend_gpu() -> Iterator[torch.device]:
    """Inside, :data:`GPU` is a device apart from the CPU; yields it."""
    with _PretendGpuMode():
        yield GPU


_GLOBAL: list[_PretendGpuMode] = []


def start() -> torch.device:
    """Enter the pretend GPU for the rest of the process (a chapter's kernel in the paper check)."""
    if not _GLOBAL:
        _GLOBAL.append(_PretendGpuMode())
        _GLOBAL[0].__enter__()
    return GPU
