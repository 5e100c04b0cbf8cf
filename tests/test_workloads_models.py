"""Model workloads: tensor counts and parameter totals exact, names unique, the registry."""

from __future__ import annotations

import math

import pytest

from hpcq.cli import main
from hpcq.workloads import WORKLOADS, models, workload, workloads

EXPECTED = {  # public totals (torchvision / Hugging Face named_parameters())
    "resnet50": (161, 25_557_032),
    "bert-base": (199, 109_482_240),
    "gpt2": (148, 124_439_808),
    "llama-7b": (291, 6_738_415_616),
    "tiny": (8, 3_658),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_and_totals(name: str) -> None:
    w = workload(name)
    assert (len(w.layout), w.parameters) == EXPECTED[name]
    assert len(set(w.layout.names)) == len(w.layout)
    w.layout.validate(EXPECTED[name][1])
    assert w.name == name and w.summary


def test_registry_lists_every_model() -> None:
    assert WORKLOADS.names() == sorted(EXPECTED)
    listing = workloads()
    assert {k: (v["tensors"], v["parameters"]) for k, v in listing.items()} == EXPECTED


def test_known_shapes_and_order() -> None:
    r = workload("resnet50").layout
    assert r.tensors[0].name == "conv1.weight" and r.tensors[0].shape == (64, 3, 7, 7)
    assert r["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert r["layer4.2.conv2.weight"].shape == (512, 512, 3, 3)
    assert r.names[-2:] == ("fc.weight", "fc.bias") and r["fc.weight"].shape == (1000, 2048)
    assert sum(".downsample.0." in n for n in r.names) == 4
    g = workload("gpt2").layout
    assert g["h.0.attn.c_attn.weight"].shape == (768, 2304)
    assert g["h.11.mlp.c_proj.weight"].shape == (3072, 768)
    assert g.names[:2] == ("wte.weight", "wpe.weight") and g["wte.weight"].shape == (50257, 768)
    b = workload("bert-base").layout
    assert b["encoder.layer.5.intermediate.dense.weight"].shape == (3072, 768)
    assert b.names[-1] == "pooler.dense.bias"
    m = workload("llama-7b").layout
    assert m["model.layers.31.mlp.down_proj.weight"].shape == (4096, 11008)
    assert m.names[-1] == "lm_head.weight" and m["lm_head.weight"].shape == (32000, 4096)
    assert m.names[1:10] == tuple(f"model.layers.0.{s}" for s in (
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"))


def test_architecture_parameters_scale() -> None:
    # the tables are built from the architecture: a smaller config follows the formulas
    assert len(models.resnet50(blocks=(2, 2, 2, 2))) == 3 + 8 * 9 + 4 * 3 + 2
    n = sum(math.prod(s) for _, s in models.llama(layers=1, hidden=8, ffn=16, vocab=10))
    assert n == 10 * 8 + 4 * 64 + 3 * 128 + 2 * 8 + 8 + 10 * 8


def test_forward_macs_where_known() -> None:
    assert workload("resnet50").forward_macs == pytest.approx(4.09e9)
    # BERT-base at 128 tokens: ~11.2 G multiply-adds (85M encoder weights per token)
    assert workload("bert-base").forward_macs == pytest.approx(11.25e9, rel=0.01)
    assert workload("tiny").forward_macs is None


def test_unknown_workload_lists_valid() -> None:
    with pytest.raises(ValueError, match="unknown workload 'resnet51'; valid: bert-base, gpt2, "
                                         "llama-7b, resnet50, tiny, file:PATH"):
        workload("resnet51")
    with pytest.raises(ValueError, match="non-empty"):
        workload("")


def test_cli_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workloads"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "25,557,032" in out and "6,738,415,616" in out
    assert main(["workloads", "--json"]) == 0
    import json

    listing = json.loads(capsys.readouterr().out)
    assert listing["gpt2"]["tensors"] == 148
