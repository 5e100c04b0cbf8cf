"""Bucket rules (DDP, fused, single) and the per-tensor compression policy."""

from __future__ import annotations

import numpy as np
import pytest
from naive import ddp_buckets, fused_buckets

from hpcq.workloads import workload
from hpcq.workloads.buckets import (
    DEFAULT_MIN_SIZE,
    MIB,
    Bucket,
    Policy,
    parse_bucket_rule,
    plan_ddp,
    plan_fused,
    plan_single,
)
from hpcq.workloads.layout import Layout, Tensor

KIB_FLOATS = 256  # 1 KiB of float32


def _layout(kib: list[float]) -> Layout:
    """Tensors t0, t1, ... of the given sizes in KiB of float32."""
    return Layout.from_shapes([(f"t{i}", (int(k * KIB_FLOATS),)) for i, k in enumerate(kib)])


def _names(buckets: tuple[Bucket, ...]) -> list[list[str]]:
    return [[t.name for t in b.tensors] for b in buckets]


def _check_partition(lay: Layout, buckets: tuple[Bucket, ...], reverse: bool = True) -> None:
    order = [t for b in buckets for t in b.tensors]
    assert order == list(reversed(lay.tensors) if reverse else lay.tensors)
    assert [b.index for b in buckets] == list(range(len(buckets)))


def test_ddp_reverse_order_and_first_bucket_cap() -> None:
    # 0.5 MiB tensors: the first bucket closes at 1 MiB (two tensors), later ones at 2 MiB
    lay = _layout([512] * 9)
    b = plan_ddp(lay, first_mib=1.0, cap_mib=2.0)
    assert _names(b) == [["t8", "t7"], ["t6", "t5", "t4", "t3"], ["t2", "t1", "t0"]]
    _check_partition(lay, b)


def test_ddp_closes_when_reaching_the_limit() -> None:
    # exactly 1 MiB closes the first bucket (torch tests size >= limit after adding)
    b = plan_ddp(_layout([256, 768, 100]), first_mib=1.0, cap_mib=25.0)
    assert _names(b) == [["t2", "t1", "t0"]]  # 100 + 768 < 1024 KiB, then + 256 >= 1024
    b = plan_ddp(_layout([100, 256, 768]), first_mib=1.0, cap_mib=25.0)
    assert _names(b) == [["t2", "t1"], ["t0"]]


def test_ddp_large_tensor_closes_the_bucket_it_joins() -> None:
    # torch semantics: a tensor above the cap is appended to the open bucket and closes it;
    # it is alone only when that bucket was empty
    lay = _layout([10, 3000, 10, 5000, 10])
    b = plan_ddp(lay, first_mib=1.0, cap_mib=2.0)
    assert _names(b) == [["t4", "t3"], ["t2", "t1"], ["t0"]]
    b = plan_ddp(_layout([3000, 5000]), first_mib=1.0, cap_mib=2.0)
    assert _names(b) == [["t1"], ["t0"]]


@pytest.mark.parametrize("seed", range(5))
def test_ddp_matches_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 400_000, size=60) * (rng.random(60) < 0.8) + 1
    lay = Layout.from_shapes([(f"p{i}", (int(s),)) for i, s in enumerate(sizes)])
    first, cap = 0.5 + seed * 0.25, 1.0 + seed
    got = plan_ddp(lay, first_mib=first, cap_mib=cap)
    rev = [t.size * 4 for t in reversed(lay.tensors)]
    want = ddp_buckets(rev, [int(first * MIB), int(cap * MIB)])
    n = len(lay)
    assert _names(got) == [[f"p{n - 1 - i}" for i in bucket] for bucket in want]
    _check_partition(lay, got)


@pytest.mark.parametrize("seed", range(5))
def test_fused_matches_naive(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    sizes = rng.integers(1, 700_000, size=50)
    lay = Layout.from_shapes([(f"p{i}", (int(s),)) for i, s in enumerate(sizes)])
    got = plan_fused(lay, mib=1.5)
    want = fused_buckets([t.size * 4 for t in reversed(lay.tensors)], int(1.5 * MIB))
    n = len(lay)
    assert _names(got) == [[f"p{n - 1 - i}" for i in bucket] for bucket in want]
    for bucket in got:  # a buffer overflows only when it holds one tensor
        assert bucket.size * 4 <= 1.5 * MIB or len(bucket.tensors) == 1


def test_fused_hand_case() -> None:
    b = plan_fused(_layout([600, 300, 200, 2000, 100]), mib=1.0)
    assert _names(b) == [["t4"], ["t3"], ["t2", "t1"], ["t0"]]


def test_single_and_bucket_buffers() -> None:
    lay = Layout.from_shapes([("w", (2, 3)), ("b", (2,)), ("c", (4,))])
    (only,) = plan_single(lay)
    assert only.tensors == lay.tensors and only.size == 12
    b = plan_ddp(lay, first_mib=1.0)[0]
    assert _names((b,)) == [["c", "b", "w"]]
    assert b.offsets == (0, 4, 6)
    assert b.layout.tensors == (Tensor("c", (4,), 0), Tensor("b", (2,), 4),
                                Tensor("w", (2, 3), 6))
    b.layout.validate(b.size)
    assert b.tensors[2].offset == 0  # the tensor keeps its offset in the model's buffer


def test_ddp_on_resnet50_defaults() -> None:
    lay = workload("resnet50").layout
    b = plan_ddp(lay)
    _check_partition(lay, b)
    assert b[0].size * 4 >= MIB and b[0].size * 4 - b[0].tensors[-1].size * 4 < MIB
    for bucket in b[1:-1]:
        assert bucket.size * 4 >= 25 * MIB > (bucket.size - bucket.tensors[-1].size) * 4


@pytest.mark.parametrize(("spec", "name", "params"), [
    ("ddp", "ddp", (("first", 1.0), ("cap", 25.0))),
    ("ddp:first=2,cap=50", "ddp", (("first", 2.0), ("cap", 50.0))),
    (" fused:mib=32 ", "fused", (("mib", 32.0),)),
    ("fused", "fused", (("mib", 64.0),)),
    ("single", "single", ()),
])
def test_parse_bucket_rule(spec: str, name: str, params: tuple) -> None:
    rule = parse_bucket_rule(spec)
    assert (rule.name, rule.params) == (name, params)
    assert parse_bucket_rule(rule.spec) == rule
    lay = _layout([512] * 5)
    assert rule(lay) == {"ddp": plan_ddp, "fused": plan_fused, "single": plan_single}[name](
        lay, *(v for _, v in params))


@pytest.mark.parametrize(("spec", "match"), [
    ("ring", "unknown bucket rule 'ring'; valid: ddp, fused, single"),
    ("ddp:cap=0", "bucket rule ddp: cap=0.0 MiB must be > 0"),
    ("ddp:first=-1", "bucket rule ddp: first=-1.0 MiB must be > 0"),
    ("fused:mib=0", "bucket rule fused: mib=0.0 MiB must be > 0"),
    ("ddp:size=3", "bucket rule ddp: unknown parameter"),
    ("ddp:cap=big", "bucket rule ddp: parameter cap='big' is not a valid float"),
    ("ddp:cap", "expected key=value"),
    ("single:mib=3", "bucket rule single: unknown parameter"),
    ("", "non-empty"),
])
def test_parse_bucket_rule_errors(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        parse_bucket_rule(spec)
    assert "\n" not in str(e.value)


def test_plan_rejects_nonpositive_caps() -> None:
    with pytest.raises(ValueError, match="cap=0"):
        plan_ddp(_layout([1]), cap_mib=0)
    with pytest.raises(ValueError, match="mib=-2"):
        plan_fused(_layout([1]), mib=-2)


def test_policy_split_by_min_size() -> None:
    lay = Layout.from_shapes([("big", (100, 50)), ("bias", (100,)), ("mid", (4096,))])
    (bucket,) = plan_single(lay)
    comp, plain = Policy().split(bucket)
    assert DEFAULT_MIN_SIZE == 4096
    assert [t.name for t in comp] == ["big", "mid"] and [t.name for t in plain] == ["bias"]
    comp, plain = Policy(min_size=0).split(bucket)
    assert plain == () and len(comp) == 3
    comp, plain = Policy(min_size=10**6).split(bucket)
    assert comp == () and len(plain) == 3


def test_policy_overrides_first_match_wins() -> None:
    lay = Layout.from_shapes([("embed.weight", (1000, 64)), ("layer.0.weight", (64, 64)),
                              ("layer.0.bias", (64,)), ("head.weight", (10, 64))])
    pol = Policy(min_size=100, overrides=(("embed.*", "none"), ("*.bias", "fp16"),
                                          ("layer.*", "sign")))
    got = {t.name: pol.codec_for(t, "qsgd:bits=4") for t in lay}
    assert got == {"embed.weight": None, "layer.0.weight": "sign", "layer.0.bias": "fp16",
                   "head.weight": "qsgd:bits=4"}
    comp, plain = pol.split(plan_single(lay)[0], "qsgd:bits=4")
    assert [t.name for t in plain] == ["embed.weight"]
    assert [t.name for t in comp] == ["layer.0.weight", "layer.0.bias", "head.weight"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_size": -1}, "min_size=-1"),
    ({"min_size": 1.5}, "min_size=1.5"),
    ({"overrides": (("*.bias", ""),)}, "override"),
    ({"overrides": ("*.bias",)}, "override"),
])
def test_policy_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Policy(**kwargs)
