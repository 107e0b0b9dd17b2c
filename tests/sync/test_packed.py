"""PackedWeights: one flat buffer that pickles out of band and unpacks into zero-copy views."""

from __future__ import annotations

import pickle

import pytest
import torch

from rlpp.sync.packed import ALIGN, PackedWeights


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w32": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),  # numpy has no bf16: bytes must carry it
        "i64": torch.arange(4, dtype=torch.int64) * 10**12,
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 3),
        "strided": torch.randn(4, 6, generator=g)[:, ::2],  # not contiguous
    }


def out_of_band_round_trip(obj):
    """What Ray's serializer does: protocol 5, buffers out of band, received read-only."""
    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    received = [memoryview(bytes(b.raw())) for b in buffers]  # bytes: read-only, like a mapped object
    return pickle.loads(data, buffers=received), len(data), len(buffers)


def test_pack_keeps_every_dtype_shape_and_value():
    tensors = sample_tensors()
    packed = PackedWeights.pack(tensors.items())
    assert list(packed) == list(tensors) and len(packed) == len(tensors)
    for name, t in tensors.items():
        assert packed[name].dtype == t.dtype and packed[name].shape == t.shape
        assert torch.equal(packed[name], t), name
        assert packed._layout[name][2] % ALIGN == 0


def test_out_of_band_pickle_gives_views_into_one_read_only_buffer():
    tensors = sample_tensors()
    got, frame_bytes, n_buffers = out_of_band_round_trip(PackedWeights.pack(tensors.items()))
    assert n_buffers == 1 and frame_bytes < 2000  # the bytes travel out of band, not in the pickle frame
    base = got._buffer.data_ptr()
    for name, t in tensors.items():
        assert torch.equal(got[name], t), name
        if t.numel():  # a view into the received buffer, not a copy
            assert base <= got[name].data_ptr() < base + got.nbytes
    model = torch.nn.Linear(5, 3)
    state = {"weight": torch.randn(3, 5), "bias": torch.randn(3)}
    got, _, _ = out_of_band_round_trip(PackedWeights.pack(state.items()))
    model.load_state_dict(got)  # a Mapping is enough, and copying out of the read-only buffer works
    assert torch.equal(model.weight, state["weight"]) and torch.equal(model.bias, state["bias"])


def test_pack_copies_so_later_updates_do_not_leak_into_the_payload():
    for stable in (True, False):
        t = torch.zeros(8)
        packed = PackedWeights.pack([("t", t)], stable=stable)
        t += 1  # the optimizer's next step
        assert torch.equal(packed["t"], torch.zeros(8))


def test_unstable_tensors_are_copied_as_they_come():
    """A ZeRO-3 gather frees each parameter after its turn: pack(stable=False) must not hold on to it."""
    def gathered():
        buf = torch.ones(4)
        yield "a", buf
        buf.fill_(-1.0)  # the next gather reuses the memory
        yield "b", buf

    packed = PackedWeights.pack(gathered(), stable=False)
    assert torch.equal(packed["a"], torch.ones(4)) and torch.equal(packed["b"], -torch.ones(4))


def test_a_name_given_twice_is_refused():
    with pytest.raises(ValueError, match="weight 'x' given twice"):
        PackedWeights.pack([("x", torch.zeros(1)), ("x", torch.ones(1))])


def test_through_the_ray_object_store(ray_local):
    """The real path: ray.put keeps one buffer, ray.get maps it without copying and without warnings."""
    import warnings

    tensors = {**sample_tensors(), "big": torch.randn(512, 512)}  # 1 MiB: stored in shared memory, not inline
    ref = ray_local.put(PackedWeights.pack(tensors.items()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's warning about the read-only mapped array is handled
        got = ray_local.get(ref)
    assert isinstance(got, PackedWeights)
    for name, t in tensors.items():
        assert torch.equal(got[name], t), name
