"""Weights as one flat byte buffer plus a layout: the object-store weight sync's payload.

A state dict pickled tensor by tensor costs one pickle frame and one copy per tensor on each side; Ray
instead hands a numpy array to pickle out of band and maps it read-only from shared memory on the
receiving side, with no copy. ``PackedWeights`` packs every tensor into one ``uint8`` buffer (offsets
aligned, any dtype, bf16 included) and pickles as that array plus ``(name, dtype, shape, offset)``
rows, so a receiver gets views into the mapped buffer. It is a read-only ``Mapping[str, Tensor]``:
``load_state_dict``, an engine's ``load_weights(w.items())`` and ``w[name]`` work as on a dict. The views
must only be read (copied into a model's parameters), never written in place.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

ALIGN = 64
"""Byte alignment of each tensor in the buffer (a view as any dtype needs its offset aligned)."""


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class PackedWeights(Mapping):
    """Named tensors living in one flat byte buffer (see the module docstring)."""

    def __init__(self, buffer: torch.Tensor, layout: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]):
        self._buffer, self._layout = buffer, layout  # name -> (dtype, shape, byte offset, byte count)

    @classmethod
    def pack(cls, named_tensors: Iterable[tuple[str, torch.Tensor]], stable: bool = True) -> "PackedWeights":
        """Copy ``named_tensors`` (any device) into one CPU buffer. ``stable``: every tensor stays valid
        until this returns, so each is copied once, straight into the buffer; otherwise (a ZeRO-3 gather
        frees each parameter after its turn) each is copied to the CPU as it comes, then into place."""
        items = []
        for name, t in named_tensors:
            t = t.detach()
            items.append((name, t if stable else t.to("cpu", copy=True)))
        layout, size = {}, 0
        for name, t in items:
            if name in layout:
                raise ValueError(f"weight {name!r} given twice")
            nbytes = t.numel() * t.element_size()
            layout[name] = (t.dtype, tuple(t.shape), size, nbytes)
            size = _aligned(size + nbytes)
        buffer = torch.empty(size, dtype=torch.uint8)
        for name, t in items:
            _, _, offset, nbytes = layout[name]
            if nbytes:
                buffer[offset : offset + nbytes].copy_(t.contiguous().view(-1).view(torch.uint8))
        return cls(buffer, layout)

    def __getitem__(self, name: str) -> torch.Tensor:
        dtype, shape, offset, nbytes = self._layout[name]
        return self._buffer[offset : offset + nbytes].view(dtype).view(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)

    @property
    def nbytes(self) -> int:
        return self._buffer.numel()

    def __reduce__(self):
        # The buffer travels as a numpy array: pickle protocol 5 (Ray's serializer) sends it out of band.
        rows = [(n, str(d).removeprefix("torch."), s, o, b) for n, (d, s, o, b) in self._layout.items()]
        return _unpack, (self._buffer.numpy(), rows)


def _unpack(buffer: np.ndarray, rows: list[tuple[str, str, tuple[int, ...], int, int]]) -> PackedWeights:
    # Ray maps the buffer read-only from shared memory; torch warns about that once per process. The
    # views are only ever copied from, so no write can reach the shared buffer.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(buffer)
    return PackedWeights(tensor, {n: (getattr(torch, d), tuple(s), o, b) for n, d, s, o, b in rows})
