// Translates a quantized ONNX CNN (the "QOperator" form: QuantizeLinear,
// QLinearConv, QLinearAdd, ... as written by onnxruntime's quantizer and the
// ONNX Model Zoo's int8 models) into a TorchScript module that libtorch runs
// in float. Part of the libtorch plugin only: it includes libtorch headers.
//
// What the translation keeps and what it drops. Each quantized tensor becomes
// a float tensor holding its dequantized values; weights and biases are
// dequantized once at load time; every quantized output keeps its range
// (values are clamped to what its scale and zero point can represent, which is
// how these models express ReLU and ReLU6) but not its rounding to 256 steps.
// On MobileNetV2-12-int8 this gives vectors with mean cosine 0.984 to OpenCV
// DNN's int8 execution and PACS-photo mAP 0.870 against its 0.866, at about
// four times the speed on an AVX-512 CPU (bench/RESULTS.md).
#ifndef PIXSEEK_EMBED_ONNX_TO_TORCHSCRIPT_H_
#define PIXSEEK_EMBED_ONNX_TO_TORCHSCRIPT_H_

#include <filesystem>
#include <string>

#include <torch/script.h>

#include "pixseek/status.h"

namespace pixseek {

// The operators the translation understands (listed in error messages).
inline constexpr char kOnnxTorchOperators[] =
    "QuantizeLinear, DequantizeLinear, QLinearConv, QLinearAdd, "
    "QLinearGlobalAveragePool, MaxPool";

// Reads `model_file` and returns a module whose forward(x) maps a float
// [N,C,H,W] batch to the value `output` names: an OpenCV layer name
// ("onnx_node!<node name>"), a node name, a value name, or empty for the
// graph's first output. Only the nodes that output depends on are
// translated. With `channels_last`, weights and activations use the NHWC
// memory format (oneDNN's fast path for these convolutions).
// Errors: InvalidArgument (not an ONNX model, unknown output, malformed
// node), Unsupported (an operator or attribute outside the list above, named
// in the message; external weight files).
Result<torch::jit::Module> TranslateQuantizedOnnx(const std::filesystem::path& model_file,
                                                  const std::string& output,
                                                  bool channels_last);

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_ONNX_TO_TORCHSCRIPT_H_
