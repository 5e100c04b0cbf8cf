"""Layout: contiguous placement, views without copies, validation naming the tensor."""

from __future__ import annotations

import numpy as np
import pytest

from hpcq.problems import problem
from hpcq.workloads.layout import Layout, Tensor, matrix_shape


def test_from_shapes_places_tensors_contiguously() -> None:
    lay = Layout.from_shapes([("w", (3, 4)), ("b", (3,)), ("s", ())])
    assert [(t.offset, t.size, t.end) for t in lay] == [(0, 12, 12), (12, 3, 15), (15, 1, 16)]
    assert lay.size == 16 and len(lay) == 3 and lay.names == ("w", "b", "s")
    assert lay["b"] == Tensor("b", (3,), 12)
    lay.validate(16)


def test_flat_is_one_tensor() -> None:
    lay = Layout.flat(10)
    assert lay.tensors == (Tensor("x", (10,), 0),) and lay.size == 10
    assert Layout.flat(5, name="g").names == ("g",)


def test_views_are_reshaped_views_not_copies() -> None:
    lay = Layout.from_shapes([("w", (2, 3)), ("b", (2,))])
    buf = np.arange(8, dtype=np.float32)
    v = lay.views(buf)
    assert v["w"].shape == (2, 3) and np.shares_memory(v["w"], buf)
    v["b"][:] = -1
    assert buf[6:].tolist() == [-1, -1]
    assert v["w"][1, 0] == 3
    with pytest.raises(ValueError, match="8 elements"):
        lay.views(np.zeros(7, dtype=np.float32))


def test_matrix_shape() -> None:
    assert matrix_shape(Tensor("c", (64, 3, 7, 7), 0)) == (64, 147)
    assert matrix_shape(Tensor("l", (10, 20), 0)) == (10, 20)
    assert matrix_shape(Tensor("b", (10,), 0)) is None
    assert matrix_shape(Tensor("s", (), 0)) is None


@pytest.mark.parametrize(("tensors", "size", "match"), [
    ((Tensor("a", (2,), 0), Tensor("b", (2,), 1)), None, "tensor b at offset 1 overlaps"),
    ((Tensor("a", (2,), 0), Tensor("b", (2,), 3)), None, "tensor b at offset 3 leaves a gap"),
    ((Tensor("a", (2,), 1),), None, "tensor a at offset 1 leaves a gap"),
    ((Tensor("a", (2,), 0), Tensor("a", (2,), 2)), None, "tensor a appears twice"),
    ((Tensor("a", (2, 0), 0),), None, r"tensor a has shape \(2, 0\)"),
    ((Tensor("a", (-1,), 0),), None, "tensor a has shape"),
    ((Tensor("", (1,), 0),), None, "no name"),
    ((Tensor("a", (2,), 0), Tensor("b", (2,), 2)), 5, "add up to 4, not 5"),
])
def test_validate_names_the_tensor(tensors: tuple[Tensor, ...], size: int | None,
                                   match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        Layout(tensors).validate(size)
    assert "\n" not in str(e.value)


def test_from_shapes_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="tensor b has shape"):
        Layout.from_shapes([("a", (2,)), ("b", (0,))])
    with pytest.raises(ValueError, match="appears twice"):
        Layout.from_shapes([("a", (2,)), ("a", (2,))])


def test_problem_layouts_match_their_vectors() -> None:
    mlp = problem("mlp:hidden=5,n=3,classes=4,m=20")
    lay = mlp.layout
    assert [(t.name, t.shape) for t in lay] == [("W1", (3, 5)), ("b1", (5,)), ("W2", (5, 4)),
                                               ("b2", (4,))]
    lay.validate(mlp.d)
    theta = mlp.x0()
    v = lay.views(theta)
    for got, want in zip(v.values(), mlp._split(theta)):
        assert np.shares_memory(got, want) and got.shape == want.shape
    sm = problem("softmax:n=6,classes=3,m=20")
    assert [(t.name, t.shape) for t in sm.layout] == [("W", (6, 3))]
    sm.layout.validate(sm.d)
    ls = problem("lstsq")
    assert ls.layout == Layout.flat(ls.d)
