#!/usr/bin/python3
"""Writes a small quantized ("QOperator") ONNX network and its known answers,
for the tests of the libtorch ONNX engine (tests/onnx_torch_test.cc).

    make_qlinear_onnx.py OUT_DIR

OUT_DIR/q.onnx        input "input" float [N,3,8,8]:
                        QuantizeLinear -> QLinearConv 3x3 (per-channel int8
                        weights, bias) -> two branches: a depthwise 3x3
                        stride 2 QLinearConv and a 1x1 stride 2 QLinearConv ->
                        QLinearAdd -> MaxPool 2x2 stride 1 ->
                        QLinearGlobalAveragePool -> DequantizeLinear "features"
                        [N,4,1,1]; plus a Sigmoid on the features, the graph's
                        output, which the engine does not run.
OUT_DIR/input.f32     3 inputs, float32 [3,3,8,8], little-endian.
OUT_DIR/expected.json {"float": [[4 values] x 3], "int8": [[...] x 3],
                       "output_scale": s}
  "float" follows the engine's documented semantics (dequantized weights,
  each quantized output clamped to its range, no rounding); "int8" is the
  exact integer arithmetic the ONNX operators define. Both are computed here
  with numpy, independently of libtorch.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(20261127)

N, C, H, W = 3, 3, 8, 8
IN_S, IN_ZP = 0.02, 128            # uint8 input quantization
C1_S, C1_ZP = 0.05, 0              # ReLU via the range [0, 255 * 0.05]
C2_S, C2_ZP = 0.04, 10
C3_S, C3_ZP = 0.03, 120
ADD_S, ADD_ZP = 0.06, 100
GAP_S, GAP_ZP = 0.02, 20


def conv_params(out_ch, in_per_group, k):
    w = rng.integers(-60, 61, size=(out_ch, in_per_group, k, k)).astype(np.int8)
    w_s = rng.uniform(0.005, 0.02, size=out_ch).astype(np.float32)
    w_zp = np.zeros(out_ch, np.int8)
    bias = rng.integers(-300, 301, size=out_ch).astype(np.int32)
    return w, w_s, w_zp, bias


CONV1 = conv_params(4, 3, 3)
CONV2 = conv_params(4, 1, 3)   # depthwise, group 4
CONV3 = conv_params(4, 4, 1)


def conv2d(x, w, stride, pad, group):
    """Plain float64 convolution, NCHW."""
    n, c, h, wd = x.shape
    m, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, m, oh, ow))
    per_group = m // group
    for o in range(m):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + k, j * stride:j * stride + k]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out


def maxpool2(x):
    return np.maximum.reduce([x[:, :, :-1, :-1], x[:, :, 1:, :-1], x[:, :, :-1, 1:], x[:, :, 1:, 1:]])


# ---- the engine's semantics: float, clamped to each output's range ----------

def clamp(x, s, zp):
    return np.clip(x, (0 - zp) * s, (255 - zp) * s)


def conv_float(x, params, x_s, stride, pad, group, y_s, y_zp):
    w, w_s, w_zp, bias = params
    wf = (w.astype(np.float64) - w_zp.reshape(-1, 1, 1, 1)) * w_s.reshape(-1, 1, 1, 1)
    y = conv2d(x, wf, stride, pad, group) + (bias * x_s * w_s).reshape(1, -1, 1, 1)
    return clamp(y, y_s, y_zp)


def forward_float(x):
    q0 = clamp(x, IN_S, IN_ZP)
    c1 = conv_float(q0, CONV1, IN_S, 1, 1, 1, C1_S, C1_ZP)
    c2 = conv_float(c1, CONV2, C1_S, 2, 1, 4, C2_S, C2_ZP)
    c3 = conv_float(c1, CONV3, C1_S, 2, 0, 1, C3_S, C3_ZP)
    a = clamp(c2 + c3, ADD_S, ADD_ZP)
    m = maxpool2(a)
    return clamp(m.mean(axis=(2, 3)), GAP_S, GAP_ZP)


# ---- exact integer arithmetic of the ONNX operators ---------------------------

def quantize(x, s, zp):
    return np.clip(np.rint(x / s) + zp, 0, 255)


def conv_int8(xq, x_s, x_zp, params, stride, pad, group, y_s, y_zp):
    w, w_s, w_zp, bias = params
    acc = conv2d(xq - x_zp, w.astype(np.float64) - w_zp.reshape(-1, 1, 1, 1), stride, pad, group)
    acc += bias.reshape(1, -1, 1, 1)
    return np.clip(np.rint(acc * (x_s * w_s).reshape(1, -1, 1, 1) / y_s) + y_zp, 0, 255)


def forward_int8(x):
    q0 = quantize(x, IN_S, IN_ZP)
    c1 = conv_int8(q0, IN_S, IN_ZP, CONV1, 1, 1, 1, C1_S, C1_ZP)
    c2 = conv_int8(c1, C1_S, C1_ZP, CONV2, 2, 1, 4, C2_S, C2_ZP)
    c3 = conv_int8(c1, C1_S, C1_ZP, CONV3, 2, 0, 1, C3_S, C3_ZP)
    a = quantize((c2 - C2_ZP) * C2_S + (c3 - C3_ZP) * C3_S, ADD_S, ADD_ZP)
    m = maxpool2(a)
    g = quantize(((m - ADD_ZP) * ADD_S).mean(axis=(2, 3)), GAP_S, GAP_ZP)
    return (g - GAP_ZP) * GAP_S


# ---- the ONNX graph ---------------------------------------------------------------

def build_model():
    inits = []

    def const(name, value, dtype):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def quant(prefix, s, zp):
        return [const(prefix + "_scale", s, np.float32), const(prefix + "_zp", zp, np.uint8)]

    def qconv(name, x, x_prefix, params, y_prefix, stride, pad, group):
        w, w_s, w_zp, bias = params
        ins = [x] + [x_prefix + "_scale", x_prefix + "_zp",
                     const(name + "_w", w, np.int8), const(name + "_w_scale", w_s, np.float32),
                     const(name + "_w_zp", w_zp, np.int8),
                     y_prefix + "_scale", y_prefix + "_zp", const(name + "_b", bias, np.int32)]
        k = w.shape[2]
        return helper.make_node("QLinearConv", ins, [name], name=name, kernel_shape=[k, k],
                                strides=[stride, stride], pads=[pad] * 4, group=group,
                                dilations=[1, 1])

    quant("in", IN_S, IN_ZP)
    quant("c1", C1_S, C1_ZP)
    quant("c2", C2_S, C2_ZP)
    quant("c3", C3_S, C3_ZP)
    quant("add", ADD_S, ADD_ZP)
    quant("gap", GAP_S, GAP_ZP)
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "in_scale", "in_zp"], ["q0"], name="quantize"),
        qconv("c1", "q0", "in", CONV1, "c1", 1, 1, 1),
        qconv("c2", "c1", "c1", CONV2, "c2", 2, 1, 4),
        qconv("c3", "c1", "c1", CONV3, "c3", 2, 0, 1),
        helper.make_node("QLinearAdd", ["c2", "c2_scale", "c2_zp", "c3", "c3_scale", "c3_zp",
                                        "add_scale", "add_zp"], ["add"], name="add",
                         domain="com.microsoft"),
        helper.make_node("MaxPool", ["add"], ["pool"], name="pool", kernel_shape=[2, 2],
                         strides=[1, 1]),
        helper.make_node("QLinearGlobalAveragePool", ["pool", "add_scale", "add_zp", "gap_scale",
                                                      "gap_zp"], ["gap"], name="gap",
                         domain="com.microsoft", channels_last=0),
        helper.make_node("DequantizeLinear", ["gap", "gap_scale", "gap_zp"], ["features"],
                         name="features_DequantizeLinear"),
        helper.make_node("Sigmoid", ["features"], ["probabilities"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "qlinear_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4, 1, 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 7
    return model


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    onnx.save(build_model(), os.path.join(out, "q.onnx"))
    x = rng.uniform(-2.5, 2.5, size=(N, C, H, W)).astype(np.float32)
    x.astype("<f4").tofile(os.path.join(out, "input.f32"))
    xd = x.astype(np.float64)
    expected = {"float": forward_float(xd).tolist(), "int8": forward_int8(xd).tolist(),
                "output_scale": GAP_S}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
