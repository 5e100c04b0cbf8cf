"""Model workloads: gradients shaped like real models', their buckets and compression policy.

``workload("resnet50")`` returns a :class:`Workload` (name, summary, :class:`Layout`, facts);
``workload("file:grads.npz")`` takes the layout of a user's own saved gradients
(:func:`hpcq.workloads.gradients.layout_from_file`).  ``workloads()`` lists them all
(``hpcq workloads``).  Gradient values come from :mod:`hpcq.workloads.gradients`, bucket
rules and the per-tensor policy from :mod:`hpcq.workloads.buckets`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpcq.registry import Registry
from hpcq.workloads import models
from hpcq.workloads.buckets import (
    Bucket,
    BucketRule,
    Policy,
    parse_bucket_rule,
    plan_ddp,
    plan_fused,
    plan_single,
)
from hpcq.workloads.gradients import (
    FromFile,
    GradientSource,
    Synthetic,
    gradient_source,
    layout_from_file,
)
from hpcq.workloads.layout import Layout, Tensor, matrix_shape


@dataclass(frozen=True)
class Workload:
    """A named gradient layout and what is known about the model behind it.

    ``forward_macs``: multiply-accumulates of one forward pass of one sample (None where
    unknown); ``facts`` says how it was counted and at which input size.
    """

    name: str
    summary: str
    layout: Layout
    forward_macs: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        """Number of parameters (the flat gradient's length)."""
        return self.layout.size

    def describe(self) -> dict[str, Any]:
        """Name, summary, sizes and facts, for result files and listings."""
        sizes = [t.size for t in self.layout]
        return {"summary": self.summary, "tensors": len(self.layout),
                "parameters": self.parameters, "largest_tensor": max(sizes),
                "forward_macs": self.forward_macs, **self.facts}


WORKLOADS: Registry[Callable[[], Workload]] = Registry("workload")


def _transformer_macs(layout: Layout, layers: int, hidden: int, tokens: int,
                      lookups: tuple[str, ...]) -> float:
    """Forward MACs of one sequence: every weight matrix once per token (embedding
    lookups excluded) plus ``QK^T`` and attention-times-V, ``2 layers tokens^2 hidden``
    (no causal saving)."""
    matmul = sum(t.size for t in layout if len(t.shape) == 2 and t.name not in lookups)
    return float(tokens * matmul + 2 * layers * tokens * tokens * hidden)


def _register(name: str, summary: str, shapes: Callable[[], models.Shapes],
              macs: Callable[[Layout], float] | None = None, **facts: Any) -> None:
    def build() -> Workload:
        lay = Layout.from_shapes(shapes())
        return Workload(name, summary, lay, None if macs is None else macs(lay), dict(facts))

    WORKLOADS.register(name)(build)


_register("resnet50", "torchvision ResNet-50 (ImageNet, 1000 classes)", models.resnet50,
          lambda lay: 4.09e9, input="3x224x224",
          macs_source="torchvision model card (its 'GFLOPS 4.09' counts multiply-adds)")
_register("bert-base", "Hugging Face BertModel bert-base-uncased, with pooler",
          models.bert_base,
          lambda lay: _transformer_macs(lay, 12, 768, 128, (
              "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight")),
          input="128 tokens", macs_source="counted from the layout (_transformer_macs)")
_register("gpt2", "Hugging Face GPT2Model, small (12 layers, 768)", models.gpt2,
          lambda lay: _transformer_macs(lay, 12, 768, 1024, ("wte.weight", "wpe.weight")),
          input="1024 tokens", macs_source="counted from the layout (_transformer_macs)")
_register("llama-7b", "Hugging Face LlamaForCausalLM, LLaMA-7B (32 layers, 4096)",
          models.llama,
          lambda lay: _transformer_macs(lay, 32, 4096, 2048, ("model.embed_tokens.weight",)),
          input="2048 tokens", macs_source="counted from the layout (_transformer_macs)")
_register("tiny", "small conv net for tests (2 conv, 2 linear; 3,658 parameters)", models.tiny)


def workload(name: str) -> Workload:
    """The registered workload ``name``, or ``file:PATH`` (a saved gradient's layout);
    ValueError listing the valid names."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"workload must be a non-empty string, got {name!r}")
    name = name.strip()
    if name.startswith("file:"):
        path = name[len("file:"):]
        return Workload(name, f"gradients saved in {path}", layout_from_file(path))
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS.names())}, "
                         f"file:PATH")
    return WORKLOADS.get(name)()


def workloads() -> dict[str, dict[str, Any]]:
    """Every registered workload: summary, tensors, parameters and facts."""
    return {name: build().describe() for name, build in WORKLOADS.items()}


__all__ = [
    "WORKLOADS",
    "Bucket",
    "BucketRule",
    "FromFile",
    "GradientSource",
    "Layout",
    "Policy",
    "Synthetic",
    "Tensor",
    "Workload",
    "gradient_source",
    "layout_from_file",
    "matrix_shape",
    "parse_bucket_rule",
    "plan_ddp",
    "plan_fused",
    "plan_single",
    "workload",
    "workloads",
]
