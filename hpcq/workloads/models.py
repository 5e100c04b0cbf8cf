"""Parameter-tensor shapes of public model architectures, built from the architecture.

Each function returns ``(name, shape)`` pairs in the order of the framework's
``named_parameters()`` (registration order), so that ``Layout.from_shapes`` lays the
flat gradient out as the framework flattens it and the bucket rules see the real order:

* ``resnet50``: torchvision ``resnet50()`` (Bottleneck blocks [3, 4, 6, 3], 1000 classes).
* ``bert_base``: Hugging Face ``BertModel`` (bert-base-uncased: 12 layers, hidden 768,
  vocabulary 30522, 512 positions, 2 token types, with the pooler).
* ``gpt2``: Hugging Face ``GPT2Model`` (small: 12 layers, 768, vocabulary 50257, 1024
  positions); its ``Conv1D`` weights are stored (in, out), e.g. ``c_attn`` 768 x 2304.
* ``llama``: Hugging Face ``LlamaForCausalLM`` (7B: 32 layers, 4096, MLP 11008,
  vocabulary 32000, RMSNorm weights only, untied ``lm_head``).
* ``tiny``: a small convolutional net for tests (two 3x3 convolutions, two linear layers).
"""

from __future__ import annotations

Shapes = list[tuple[str, tuple[int, ...]]]


def _conv(name: str, cout: int, cin: int, k: int, bias: bool = False) -> Shapes:
    out: Shapes = [(f"{name}.weight", (cout, cin, k, k))]
    return out + [(f"{name}.bias", (cout,))] if bias else out


def _linear(name: str, fout: int, fin: int, bias: bool = True) -> Shapes:
    """A ``torch.nn.Linear``: weight (out, in), bias (out)."""
    out: Shapes = [(f"{name}.weight", (fout, fin))]
    return out + [(f"{name}.bias", (fout,))] if bias else out


def _norm(name: str, n: int, bias: bool = True) -> Shapes:
    """BatchNorm/LayerNorm (weight and bias) or RMSNorm (``bias=False``)."""
    out: Shapes = [(f"{name}.weight", (n,))]
    return out + [(f"{name}.bias", (n,))] if bias else out


def resnet50(blocks: tuple[int, ...] = (3, 4, 6, 3), classes: int = 1000) -> Shapes:
    """torchvision ResNet with Bottleneck blocks (expansion 4); defaults give ResNet-50."""
    out = _conv("conv1", 64, 3, 7) + _norm("bn1", 64)
    inplanes = 64
    for stage, n in enumerate(blocks):
        width = 64 << stage
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            out += _conv(f"{p}.conv1", width, inplanes, 1) + _norm(f"{p}.bn1", width)
            out += _conv(f"{p}.conv2", width, width, 3) + _norm(f"{p}.bn2", width)
            out += _conv(f"{p}.conv3", 4 * width, width, 1) + _norm(f"{p}.bn3", 4 * width)
            if b == 0:  # stride or width change: the projection shortcut
                out += (_conv(f"{p}.downsample.0", 4 * width, inplanes, 1)
                        + _norm(f"{p}.downsample.1", 4 * width))
            inplanes = 4 * width
    return out + _linear("fc", classes, inplanes)


def bert_base(layers: int = 12, hidden: int = 768, ffn: int = 3072, vocab: int = 30522,
              positions: int = 512, types: int = 2) -> Shapes:
    """Hugging Face ``BertModel`` (embeddings, encoder, pooler)."""
    e = "embeddings"
    out: Shapes = [(f"{e}.word_embeddings.weight", (vocab, hidden)),
                   (f"{e}.position_embeddings.weight", (positions, hidden)),
                   (f"{e}.token_type_embeddings.weight", (types, hidden))]
    out += _norm(f"{e}.LayerNorm", hidden)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            out += _linear(f"{p}.attention.self.{proj}", hidden, hidden)
        out += _linear(f"{p}.attention.output.dense", hidden, hidden)
        out += _norm(f"{p}.attention.output.LayerNorm", hidden)
        out += _linear(f"{p}.intermediate.dense", ffn, hidden)
        out += _linear(f"{p}.output.dense", hidden, ffn)
        out += _norm(f"{p}.output.LayerNorm", hidden)
    return out + _linear("pooler.dense", hidden, hidden)


def gpt2(layers: int = 12, hidden: int = 768, vocab: int = 50257,
         positions: int = 1024) -> Shapes:
    """Hugging Face ``GPT2Model``; ``Conv1D`` weights are (in, out)."""
    out: Shapes = [("wte.weight", (vocab, hidden)), ("wpe.weight", (positions, hidden))]
    for i in range(layers):
        p = f"h.{i}"
        out += _norm(f"{p}.ln_1", hidden)
        out += [(f"{p}.attn.c_attn.weight", (hidden, 3 * hidden)),
                (f"{p}.attn.c_attn.bias", (3 * hidden,)),
                (f"{p}.attn.c_proj.weight", (hidden, hidden)),
                (f"{p}.attn.c_proj.bias", (hidden,))]
        out += _norm(f"{p}.ln_2", hidden)
        out += [(f"{p}.mlp.c_fc.weight", (hidden, 4 * hidden)),
                (f"{p}.mlp.c_fc.bias", (4 * hidden,)),
                (f"{p}.mlp.c_proj.weight", (4 * hidden, hidden)),
                (f"{p}.mlp.c_proj.bias", (hidden,))]
    return out + _norm("ln_f", hidden)


def llama(layers: int = 32, hidden: int = 4096, ffn: int = 11008,
          vocab: int = 32000) -> Shapes:
    """Hugging Face ``LlamaForCausalLM`` (no biases; RMSNorm weights; untied lm_head)."""
    out: Shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out += _linear(f"{p}.self_attn.{proj}", hidden, hidden, bias=False)
        out += _linear(f"{p}.mlp.gate_proj", ffn, hidden, bias=False)
        out += _linear(f"{p}.mlp.up_proj", ffn, hidden, bias=False)
        out += _linear(f"{p}.mlp.down_proj", hidden, ffn, bias=False)
        out += _norm(f"{p}.input_layernorm", hidden, bias=False)
        out += _norm(f"{p}.post_attention_layernorm", hidden, bias=False)
    out += _norm("model.norm", hidden, bias=False)
    return out + _linear("lm_head", vocab, hidden, bias=False)


def tiny() -> Shapes:
    """Conv 1->8 (3x3), conv 8->16 (3x3), pooled to 2x2, linear 64->32->10: 3,658 parameters."""
    return (_conv("conv1", 8, 1, 3, bias=True) + _conv("conv2", 16, 8, 3, bias=True)
            + _linear("fc1", 32, 64) + _linear("fc2", 10, 32))
