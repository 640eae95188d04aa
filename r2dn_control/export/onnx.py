r"""ONNX export of the stacked step form (written with ``onnx.helper``, no torch tracing).

``mode="step"``: inputs ``u`` (batch, nu), ``x`` (batch, nx); outputs ``y`` (batch, ny),
``x_next`` (batch, nx). ``mode="sequence"``: inputs ``u`` (batch, time, nu), ``x0``
(batch, nx); outputs ``y`` (batch, time, ny), ``x_final`` (batch, nx), the time loop an ONNX
``Scan`` whose body is the step graph. The graph is the step form of
`r2dn_control.nn.realtime` (docs/theory.md §2, §3): ``Gemm`` for every affine map,
the LBDN folded to one ``Gemm`` per layer, and for a REN the equilibrium ``w = σ(D₁₁w + v)``
as its exact triangular sequence (``w_i = σ(v_i + w_{<i} · (D₁₁)_{i,<i})``, nv small nodes,
no iterative solve).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..nn.realtime import StepForm

OPSET = 17
MODES = ("step", "sequence")


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError("ONNX export needs the 'export' extra: pip install "
                          "'r2dn-control[export]' (onnx, onnxruntime)") from exc
    return onnx


class _Graph:
    """Collects nodes with unique value names."""

    def __init__(self, np_dtype: np.dtype) -> None:
        self.onnx = _onnx()
        self.nodes: list = []
        self.initializers: list = []
        self.np_dtype = np_dtype
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray, dtype: npt.DTypeLike | None = None) -> str:
        name = self.name(stem)
        arr = np.asarray(value, dtype=self.np_dtype if dtype is None else dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None,
           outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [self.name(stem or op_type.lower())]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0]

    def activation(self, name: str, value: str) -> str:
        if name == "relu":
            return self.op("Relu", [value])
        if name == "tanh":
            return self.op("Tanh", [value])
        if name == "sigmoid":
            return self.op("Sigmoid", [value])
        if name == "leaky_relu":
            if self.np_dtype == np.float64:
                # onnxruntime's CPU LeakyRelu is float-only: max(a, 0.01 a) is the same map
                # (slope < 1) from ops it runs in double.
                slope = self.const("slope", np.array(0.01))
                return self.op("Max", [value, self.op("Mul", [value, slope])], "leaky_relu")
            return self.op("LeakyRelu", [value], alpha=0.01)
        return self.op("Identity", [value])

    def affine(self, value: str, weight: np.ndarray, bias: np.ndarray | None, stem: str) -> str:
        b = np.zeros(weight.shape[1]) if bias is None else bias
        return self.op("Gemm", [value, self.const(f"{stem}_W", weight), self.const(f"{stem}_b", b)],
                       stem)


def _step_nodes(g: _Graph, form: StepForm, x: str, u: str, y: str, x_next: str) -> None:
    """Append the nodes of one step from value names ``x``, ``u`` to outputs ``y``, ``x_next``."""
    z = g.op("Concat", [x, u], "z", axis=1)
    v = g.affine(z, form.w_in, form.b_in, "v")
    if form.d11 is None:
        h = v
        *hidden, (w_last, b_last) = form.layers
        for k, (weight, bias) in enumerate(hidden):
            h = g.activation(form.activation, g.affine(h, weight, bias, f"layer{k}"))
        w = g.affine(h, w_last, b_last, "w")
    else:
        w = _equilibrium_nodes(g, form, v)
    zw = g.op("Concat", [z, w], "zw", axis=1)
    out = g.affine(zw, form.w_out, form.b_out, "out")
    split = g.const("split", np.array([form.ny, form.nx]), np.int64)
    g.op("Split", [out, split], outputs=[y, x_next], axis=1)


def _equilibrium_nodes(g: _Graph, form: StepForm, v: str) -> str:
    """``w_i = σ(v_i + w_{<i} · D₁₁[i, <i])`` for i = 1 … nv, unrolled (exact)."""
    d11 = form.d11
    if d11 is None:
        raise ValueError("the equilibrium nodes need a REN step form (d11), got an R2DN one")
    v_cols = [g.name("v_col") for _ in range(form.nv)]
    g.op("Split", [v, g.const("ones", np.ones(form.nv), np.int64)], outputs=v_cols, axis=1)
    w = g.activation(form.activation, v_cols[0])
    for i in range(1, form.nv):
        row = d11[i, :i][:, None]
        pre = g.op("Add", [v_cols[i], g.op("MatMul", [w, g.const(f"d11_{i}", row)])])
        w = g.op("Concat", [w, g.activation(form.activation, pre)], "w_cols", axis=1)
    return w


def onnx_model(form: StepForm, mode: str = "step", doc: str = ""):
    """The ``onnx.ModelProto`` of ``form`` in ``mode`` ("step" or "sequence"), checked."""
    onnx = _onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    double = str(form.dtype) == "torch.float64"
    elem = tp.DOUBLE if double else tp.FLOAT
    np_dtype = np.dtype(np.float64 if double else np.float32)
    g = _Graph(np_dtype)
    if mode == "step":
        _step_nodes(g, form, "x", "u", "y", "x_next")
        inputs = [helper.make_tensor_value_info("u", elem, ["batch", form.nu]),
                  helper.make_tensor_value_info("x", elem, ["batch", form.nx])]
        outputs = [helper.make_tensor_value_info("y", elem, ["batch", form.ny]),
                   helper.make_tensor_value_info("x_next", elem, ["batch", form.nx])]
        graph = helper.make_graph(g.nodes, "r2dn_step", inputs, outputs, g.initializers)
    else:
        body = _Graph(np_dtype)
        _step_nodes(body, form, "x_in", "u_t", "y_t", "x_out")
        body_graph = helper.make_graph(
            body.nodes, "r2dn_step_body",
            [helper.make_tensor_value_info("x_in", elem, ["batch", form.nx]),
             helper.make_tensor_value_info("u_t", elem, ["batch", form.nu])],
            [helper.make_tensor_value_info("x_out", elem, ["batch", form.nx]),
             helper.make_tensor_value_info("y_t", elem, ["batch", form.ny])],
            body.initializers)
        # Scan carries x over the time axis (1) of u and stacks y_t along the same axis.
        g.op("Scan", ["x0", "u"], outputs=["x_final", "y"], body=body_graph,
             num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])
        inputs = [helper.make_tensor_value_info("u", elem, ["batch", "time", form.nu]),
                  helper.make_tensor_value_info("x0", elem, ["batch", form.nx])]
        outputs = [helper.make_tensor_value_info("y", elem, ["batch", "time", form.ny]),
                   helper.make_tensor_value_info("x_final", elem, ["batch", form.nx])]
        graph = helper.make_graph(g.nodes, "r2dn_sequence", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="r2dn-control", doc_string=doc)
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    onnx.checker.check_model(model)
    return model
