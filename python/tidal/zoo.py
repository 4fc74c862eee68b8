"""Example models, built in code so that tidal ships no binary files.

`write_zoo` writes the models that `tidal serve` serves when given no
repository, one folder each with a `model.onnx` and a `tidal.toml`:

- `mlp`: `x` FP32 [batch, 512] -> four Gemm layers with Relu between ->
  `y` FP32 [batch, 128].
- `cnn`: `image` FP32 [batch, 3, 32, 32] -> two Conv/Relu/MaxPool stages ->
  Gemm -> `logits` FP32 [batch, 10].
- `transformer`: `tokens` INT64 [batch, 32] (vocabulary 1000) -> embedding
  and positions -> two post-norm encoder layers (4 heads, d_model 64, FFN
  256) -> mean over positions -> `embedding` FP32 [batch, 64].
- `transformer_large`: the same encoder over 128 tokens with d_model 128
  (FFN 512): about 1.6 ms a sequence on one core, a cost that grows linearly
  with the batch; the heavier example, whose capacity one load generator
  can exceed many times over.

`write_test_models` writes the small models the test suite relies on:
`identity_all` (one Identity per KServe datatype), `add_sub` (two outputs),
`fail_on_negative` (ONNX Runtime raises at run time when an input is
negative), `no_batch` (fixed shapes, `max_batch_size = 0`) and `one_row`
(a variable batch dimension, but ONNX Runtime fails for more than one row).

Weights come from a fixed seed, so every run writes the same bytes.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ZOO",
    "build_add_sub",
    "build_cnn",
    "build_fail_on_negative",
    "build_identity_all",
    "build_mlp",
    "build_no_batch",
    "build_one_row",
    "build_transformer",
    "build_transformer_large",
    "write_test_models",
    "write_zoo",
]

OPSET = 17
"""ai.onnx opset of every model here; 17 is the first with LayerNormalization."""

IR_VERSION = 8
"""The IR version that goes with opset 17; every ONNX Runtime since 1.11 reads it."""

SEED = 20240601

BATCH = "batch"
"""Name of the symbolic batch dimension."""

KSERVE_TO_ONNX: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
"""The KServe datatypes `identity_all` round-trips, with their ONNX element types."""

Builder = Callable[[], onnx.ModelProto]


class _Graph:
    """Collects nodes and initializers; keeps the builders short and readable."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, name: str, shape: Sequence[int], fan_in: int) -> str:
        # He-style scaling keeps activations of the random network in a sane range.
        scale = np.float32(np.sqrt(2.0 / fan_in))
        values = self.rng.standard_normal(tuple(shape), dtype=np.float32) * scale
        return self.const(name, values)

    def bias(self, name: str, size: int) -> str:
        return self.const(name, self.rng.uniform(-0.1, 0.1, size).astype(np.float32))

    def op(self, op_type: str, inputs: Sequence[str], output: str = "", **attrs: Any) -> str:
        if not output:
            self._count += 1
            output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def model(
        self,
        name: str,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        doc: str,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name, list(inputs), list(outputs), initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="tidal.zoo",
            doc_string=doc,
        )
        return model


def _tensor(name: str, elem_type: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def build_mlp() -> onnx.ModelProto:
    """A 512 -> 1024 -> 1024 -> 512 -> 128 perceptron with Relu between layers.

    Returns:
        The model: input `x` FP32 [batch, 512], output `y` FP32 [batch, 128].
    """
    g = _Graph(SEED)
    widths = [512, 1024, 1024, 512, 128]
    h = "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        last = i == len(widths) - 2
        w = g.weight(f"fc{i}.weight", (n_out, n_in), n_in)
        b = g.bias(f"fc{i}.bias", n_out)
        h = g.op("Gemm", [h, w, b], "y" if last else "", transB=1)
        if not last:
            h = g.op("Relu", [h])
    return g.model(
        "mlp",
        [_tensor("x", TensorProto.FLOAT, [BATCH, 512])],
        [_tensor("y", TensorProto.FLOAT, [BATCH, 128])],
        "Four-layer perceptron, 512 -> 128.",
    )


def build_cnn() -> onnx.ModelProto:
    """A small image classifier: two Conv/Relu/MaxPool stages and a linear head.

    Returns:
        The model: input `image` FP32 [batch, 3, 32, 32], output `logits`
        FP32 [batch, 10].
    """
    g = _Graph(SEED + 1)
    h = "image"
    channels = [3, 16, 32]
    for i, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        w = g.weight(f"conv{i}.weight", (c_out, c_in, 3, 3), c_in * 9)
        b = g.bias(f"conv{i}.bias", c_out)
        h = g.op("Conv", [h, w, b], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = g.op("Relu", [h])
        h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    # 32 channels x 8 x 8 after two 2x2 poolings of 32 x 32.
    features = 32 * 8 * 8
    h = g.op("Flatten", [h], axis=1)
    w = g.weight("head.weight", (10, features), features)
    b = g.bias("head.bias", 10)
    g.op("Gemm", [h, w, b], "logits", transB=1)
    return g.model(
        "cnn",
        [_tensor("image", TensorProto.FLOAT, [BATCH, 3, 32, 32])],
        [_tensor("logits", TensorProto.FLOAT, [BATCH, 10])],
        "Two-stage CNN over 3x32x32 images, 10 classes.",
    )


def build_transformer(
    *,
    vocab: int = 1000,
    seq_len: int = 32,
    d_model: int = 64,
    heads: int = 4,
    d_ff: int = 256,
    layers: int = 2,
) -> onnx.ModelProto:
    """A small transformer encoder that embeds a sequence of token ids.

    Attention is spelt out with MatMul/Reshape/Transpose/Softmax so that any
    ONNX Runtime build runs it, without contrib operators.

    Args:
        vocab: number of token ids.
        seq_len: tokens per sequence.
        d_model: width of the residual stream.
        heads: attention heads; must divide `d_model`.
        d_ff: hidden width of the feed-forward blocks.
        layers: encoder layers.

    Returns:
        The model: input `tokens` INT64 [batch, seq_len], output `embedding`
        FP32 [batch, d_model] (the mean of the last layer over positions).
    """
    if d_model % heads:
        raise ValueError(f"`heads` ({heads}) must divide `d_model` ({d_model})")
    d_head = d_model // heads
    g = _Graph(SEED + 2)
    table = g.const("embed.weight", g.rng.standard_normal((vocab, d_model), dtype=np.float32))
    positions = g.const("embed.positions", 0.1 * g.rng.standard_normal((seq_len, d_model)))
    # Reshape targets: 0 copies the batch and sequence dims from the input.
    split_heads = g.const("shape.split_heads", [0, 0, heads, d_head], np.int64)
    merge_heads = g.const("shape.merge_heads", [0, 0, d_model], np.int64)
    scale = g.const("attn.scale", 1.0 / np.sqrt(d_head))

    x = g.op("Gather", [table, "tokens"], axis=0)
    x = g.op("Add", [x, positions])

    def linear(name: str, h: str, n_in: int, n_out: int) -> str:
        w = g.weight(f"{name}.weight", (n_in, n_out), n_in)
        return g.op("Add", [g.op("MatMul", [h, w]), g.bias(f"{name}.bias", n_out)])

    def layer_norm(name: str, h: str) -> str:
        gamma = g.const(f"{name}.weight", np.ones(d_model))
        beta = g.const(f"{name}.bias", np.zeros(d_model))
        return g.op("LayerNormalization", [h, gamma, beta], axis=-1, epsilon=1e-5)

    for i in range(layers):
        p = f"layer{i}"
        # [b, s, d] -> [b, s, h, dh] -> [b, h, s, dh]; keys go to [b, h, dh, s].
        q = g.op("Reshape", [linear(f"{p}.q", x, d_model, d_model), split_heads])
        k = g.op("Reshape", [linear(f"{p}.k", x, d_model, d_model), split_heads])
        v = g.op("Reshape", [linear(f"{p}.v", x, d_model, d_model), split_heads])
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [k], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = g.op("Mul", [g.op("MatMul", [q, k]), scale])
        attn = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [attn, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads])
        x = layer_norm(f"{p}.norm1", g.op("Add", [x, linear(f"{p}.out", ctx, d_model, d_model)]))
        ff = g.op("Relu", [linear(f"{p}.ff1", x, d_model, d_ff)])
        x = layer_norm(f"{p}.norm2", g.op("Add", [x, linear(f"{p}.ff2", ff, d_ff, d_model)]))

    g.op("ReduceMean", [x], "embedding", axes=[1], keepdims=0)
    return g.model(
        "transformer",
        [_tensor("tokens", TensorProto.INT64, [BATCH, seq_len])],
        [_tensor("embedding", TensorProto.FLOAT, [BATCH, d_model])],
        f"{layers}-layer transformer encoder, {heads} heads, d_model {d_model}, mean-pooled.",
    )


def build_transformer_large() -> onnx.ModelProto:
    """`build_transformer` at four times the sequence and twice the width.

    Returns:
        The model: input `tokens` INT64 [batch, 128] (vocabulary 1000), output
        `embedding` FP32 [batch, 128].
    """
    return build_transformer(seq_len=128, d_model=128, heads=4, d_ff=512, layers=2)


def build_identity_all() -> onnx.ModelProto:
    """One Identity per KServe datatype, so every datatype can round-trip.

    Returns:
        The model: for each datatype `DT` in `KSERVE_TO_ONNX`, input `in_DT`
        and output `out_DT`, both [batch, 4].
    """
    g = _Graph(SEED + 3)
    inputs, outputs = [], []
    for datatype, elem_type in KSERVE_TO_ONNX.items():
        inputs.append(_tensor(f"in_{datatype}", elem_type, [BATCH, 4]))
        outputs.append(_tensor(f"out_{datatype}", elem_type, [BATCH, 4]))
        g.op("Identity", [f"in_{datatype}"], f"out_{datatype}")
    return g.model("identity_all", inputs, outputs, "Identity for every KServe datatype.")


def build_add_sub() -> onnx.ModelProto:
    """Two inputs and two outputs, for requests that ask for a subset of outputs.

    Returns:
        The model: inputs `a`, `b` FP32 [batch, 16]; outputs `sum` = a + b and
        `diff` = a - b.
    """
    g = _Graph(SEED + 4)
    g.op("Add", ["a", "b"], "sum")
    g.op("Sub", ["a", "b"], "diff")
    spec: list[int | str] = [BATCH, 16]
    return g.model(
        "add_sub",
        [_tensor("a", TensorProto.FLOAT, spec), _tensor("b", TensorProto.FLOAT, spec)],
        [_tensor("sum", TensorProto.FLOAT, spec), _tensor("diff", TensorProto.FLOAT, spec)],
        "sum = a + b, diff = a - b.",
    )


def build_fail_on_negative() -> onnx.ModelProto:
    """Identity that makes ONNX Runtime fail at run time when any input is negative.

    Each element's Gather index is 0 when it is >= 0 and 1 when it is
    negative; the gathered table has one entry, so a negative element puts
    the index out of range and the run raises, while non-negative inputs
    come back unchanged (plus the table's 0.0).

    Returns:
        The model: input `x` FP32 [batch, 4], output `y` FP32 [batch, 4].
    """
    g = _Graph(SEED + 5)
    table = g.const("table", [0.0])
    zero = g.const("zero", 0.0)
    index = g.op("Cast", [g.op("Less", ["x", zero])], to=TensorProto.INT64)
    g.op("Add", ["x", g.op("Gather", [table, index], axis=0)], "y")
    return g.model(
        "fail_on_negative",
        [_tensor("x", TensorProto.FLOAT, [BATCH, 4])],
        [_tensor("y", TensorProto.FLOAT, [BATCH, 4])],
        "y = x; raises at run time when any x < 0.",
    )


def build_no_batch() -> onnx.ModelProto:
    """A model with fixed shapes and no batch dimension.

    Returns:
        The model: input `x` FP32 [3, 4], output `y` = 2 * x FP32 [3, 4].
    """
    g = _Graph(SEED + 6)
    g.op("Mul", ["x", g.const("two", 2.0)], "y")
    return g.model(
        "no_batch",
        [_tensor("x", TensorProto.FLOAT, [3, 4])],
        [_tensor("y", TensorProto.FLOAT, [3, 4])],
        "y = 2 * x over a fixed [3, 4] tensor.",
    )


def build_one_row() -> onnx.ModelProto:
    """A model whose batch dimension is variable but which runs one row only.

    It reshapes its input to [1, 4], so a batch of two or more fails in ONNX
    Runtime: the warm-up profile stops at batch 2 and says so in the log.

    Returns:
        The model: input `x` FP32 [batch, 4], output `y` = x FP32 [batch, 4].
    """
    g = _Graph(SEED + 7)
    g.op("Reshape", ["x", g.const("one_row", [1, 4], np.int64)], "y")
    return g.model(
        "one_row",
        [_tensor("x", TensorProto.FLOAT, [BATCH, 4])],
        [_tensor("y", TensorProto.FLOAT, [BATCH, 4])],
        "y = x for one row; fails for more.",
    )


_STATIC = '[batching]\npolicy = "static"\nmax_queue_delay_us = 0\n'

# The example models state only their objective: the adaptive policy does the rest.
ZOO: dict[str, tuple[Builder, str]] = {
    "mlp": (build_mlp, "max_batch_size = 64\n\n[batching]\nslo_ms = 10\n"),
    "cnn": (build_cnn, "max_batch_size = 64\n\n[batching]\nslo_ms = 10\n"),
    "transformer": (build_transformer, "max_batch_size = 32\n\n[batching]\nslo_ms = 20\n"),
    "transformer_large": (
        build_transformer_large,
        "max_batch_size = 32\n\n[batching]\nslo_ms = 100\n",
    ),
}
"""The example models: name -> (builder, contents of its `tidal.toml`)."""

TEST_MODELS: dict[str, tuple[Builder, str]] = {
    "identity_all": (build_identity_all, f"max_batch_size = 8\n\n{_STATIC}"),
    "add_sub": (build_add_sub, f"max_batch_size = 8\n\n{_STATIC}"),
    "fail_on_negative": (build_fail_on_negative, f"max_batch_size = 8\n\n{_STATIC}"),
    "no_batch": (build_no_batch, "max_batch_size = 0\n"),
    # Adaptive, so that it is profiled when it loads.
    "one_row": (build_one_row, "max_batch_size = 8\n"),
}
"""The test suite's models: name -> (builder, contents of its `tidal.toml`)."""


def _write_atomically(path: Path, data: bytes) -> None:
    # A server may be reading this folder while another process rewrites it:
    # a rename never exposes a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(directory: Path, models: dict[str, tuple[Builder, str]]) -> list[str]:
    for name, (build, toml) in models.items():
        folder = directory / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / "model.onnx", build().SerializeToString())
        _write_atomically(folder / "tidal.toml", f"# written by tidal.zoo\n{toml}".encode())
    return list(models)


def write_zoo(directory: Path) -> list[str]:
    """Write the example models, one folder each, into a model repository.

    Existing folders of the same names are overwritten; others are left alone.

    Args:
        directory: the repository; created if missing.

    Returns:
        The names of the models written.
    """
    return _write(directory, ZOO)


def write_test_models(directory: Path) -> list[str]:
    """Write the test suite's models, one folder each, into a model repository.

    Existing folders of the same names are overwritten; others are left alone.

    Args:
        directory: the repository; created if missing.

    Returns:
        The names of the models written.
    """
    return _write(directory, TEST_MODELS)
