// Quantized ONNX -> TorchScript (see onnx_to_torchscript.h). The ONNX file is
// parsed with the ONNX project's protobuf classes (Debian libonnx-dev); the
// graph becomes TorchScript source, one line per node, whose constants
// (dequantized weights and biases) are buffers of the module:
//
//   def forward(self, x):
//       x = x.contiguous(memory_format=2)  # channels last
//       v0 = torch.clamp(x, -2.127, 2.6308)
//       v1 = torch.clamp(torch.conv2d(v0, self.w1, self.b1, [2, 2], [1, 1], [1, 1], 1), 0.0, 4.49)
//       ...
//
// libtorch compiles the source, so the interpreter, its memory planning and
// the convolution kernels are libtorch's own.
#include "embed/onnx_to_torchscript.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include <onnx/onnx_pb.h>

namespace pixseek {
namespace {

constexpr char kOpenCvLayerPrefix[] = "onnx_node!";

// A value of the graph as the translation sees it: the TorchScript variable
// holding it and, for a quantized tensor, its quantization (the variable
// holds the dequantized values).
struct Value {
  std::string var;
  bool quantized = false;
  double scale = 1.0;
  int64_t zero_point = 0;
  int64_t qmin = 0, qmax = 255;
  // The representable range, (q - zero_point) * scale for q in [qmin, qmax].
  double lo() const { return static_cast<double>(qmin - zero_point) * scale; }
  double hi() const { return static_cast<double>(qmax - zero_point) * scale; }
};

std::string Num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s = buf;
  // TorchScript needs a float literal where a float is meant.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string IntList(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string NodeLabel(const onnx::NodeProto& node) {
  std::string name = node.name();
  if (name.empty()) name = node.output_size() > 0 ? node.output(0) : std::string("?");
  return node.op_type() + " node '" + name + "'";
}

// Element count of dims; -1 for a negative dimension or a count past 2^40
// (a damaged file), checked before anything is allocated.
int64_t Numel(const onnx::TensorProto& t) {
  constexpr int64_t kMax = int64_t{1} << 40;
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || (d > 0 && n > kMax / d)) return -1;
    n *= d;
  }
  return n;
}

// An initializer as a float tensor (integers converted exactly: they are
// int8, uint8 or int32 here).
Result<torch::Tensor> ToFloatTensor(const onnx::TensorProto& t) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return Status::Unsupported("initializer '" + t.name() +
                               "' is stored in an external data file, which is not supported");
  }
  const int64_t n = Numel(t);
  if (n < 0) return Status::InvalidArgument("initializer '" + t.name() + "' has an impossible shape");
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  const bool raw = t.has_raw_data();
  const std::string& bytes = t.raw_data();
  auto wrong_size = [&] {
    return Status::InvalidArgument("initializer '" + t.name() + "' holds the wrong number of values for its shape " +
                                   IntList(dims));
  };
  // Sizes are checked against the data the file holds before allocating.
  std::vector<float> values;
  auto from_raw = [&](auto sample) -> Status {
    using T = decltype(sample);
    if (bytes.size() != static_cast<size_t>(n) * sizeof(T)) return wrong_size();
    values.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, bytes.data() + i * sizeof(T), sizeof(T));
      values[static_cast<size_t>(i)] = static_cast<float>(v);
    }
    return Status::Ok();
  };
  auto from_field = [&](const auto& field) -> Status {
    if (field.size() != n) return wrong_size();
    values.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<float>(field.Get(i));
    return Status::Ok();
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      PIXSEEK_RETURN_IF_ERROR(raw ? from_raw(float{}) : from_field(t.float_data()));
      break;
    case onnx::TensorProto::UINT8:
      PIXSEEK_RETURN_IF_ERROR(raw ? from_raw(uint8_t{}) : from_field(t.int32_data()));
      break;
    case onnx::TensorProto::INT8:
      PIXSEEK_RETURN_IF_ERROR(raw ? from_raw(int8_t{}) : from_field(t.int32_data()));
      break;
    case onnx::TensorProto::INT32:
      PIXSEEK_RETURN_IF_ERROR(raw ? from_raw(int32_t{}) : from_field(t.int32_data()));
      break;
    default:
      return Status::Unsupported("initializer '" + t.name() + "' has ONNX data type " +
                                 std::to_string(t.data_type()) +
                                 " (only float, int8, uint8 and int32 are supported)");
  }
  return torch::from_blob(values.data(), dims, torch::kFloat).clone();
}

class Translator {
 public:
  Translator(const onnx::GraphProto& graph, bool channels_last)
      : graph_(graph), channels_last_(channels_last) {
    for (const auto& init : graph.initializer()) initializers_[init.name()] = &init;
  }

  Result<torch::jit::Module> Run(const std::string& output_spec) {
    PIXSEEK_ASSIGN_OR_RETURN(std::string target, ResolveOutput(output_spec));
    std::string input_name;
    for (const auto& in : graph_.input()) {
      if (initializers_.count(in.name()) == 0) {
        input_name = in.name();
        break;
      }
    }
    if (input_name.empty()) return Status::InvalidArgument("the ONNX graph has no input");
    values_[input_name] = Value{"x"};
    source_ << "def forward(self, x):\n";
    // memory_format 2 is torch.channels_last (a name only Python resolves).
    if (channels_last_) source_ << "    x = x.contiguous(memory_format=2)\n";

    const std::set<int> needed = NodesNeededFor(target);
    for (int i = 0; i < graph_.node_size(); ++i) {
      if (needed.count(i) != 0) PIXSEEK_RETURN_IF_ERROR(Translate(graph_.node(i)));
    }
    auto it = values_.find(target);
    if (it == values_.end()) {
      return Status::InvalidArgument("output '" + target + "' cannot be computed from the input '" +
                                     input_name + "'");
    }
    source_ << "    return " << it->second.var << "\n";
    try {
      module_.define(source_.str());
      module_.eval();
    } catch (const std::exception& e) {
      return Status::Internal(std::string("the translated TorchScript does not compile: ") + e.what());
    }
    return module_;
  }

 private:
  // The value name the card's output_layer means.
  Result<std::string> ResolveOutput(const std::string& spec) const {
    if (spec.empty()) {
      if (graph_.output_size() == 0) return Status::InvalidArgument("the ONNX graph has no output");
      return graph_.output(0).name();
    }
    std::string name = spec;
    if (name.rfind(kOpenCvLayerPrefix, 0) == 0) name = name.substr(std::strlen(kOpenCvLayerPrefix));
    for (const auto& node : graph_.node()) {
      if (node.name() == name && node.output_size() > 0) return node.output(0);
    }
    for (const auto& node : graph_.node()) {
      for (const auto& out : node.output()) {
        if (out == name) return out;
      }
    }
    return Status::InvalidArgument("output_layer \"" + spec + "\" is neither a node nor a value of the graph");
  }

  // Indices of the nodes `target` depends on.
  std::set<int> NodesNeededFor(const std::string& target) const {
    std::set<std::string> wanted{target};
    std::set<int> nodes;
    for (int i = graph_.node_size() - 1; i >= 0; --i) {
      const auto& node = graph_.node(i);
      bool produces = false;
      for (const auto& out : node.output()) produces = produces || wanted.count(out) != 0;
      if (!produces) continue;
      nodes.insert(i);
      for (const auto& in : node.input()) {
        if (!in.empty() && initializers_.count(in) == 0) wanted.insert(in);
      }
    }
    return nodes;
  }

  Status Translate(const onnx::NodeProto& node) {
    const std::string& op = node.op_type();
    if (op == "QuantizeLinear") return Quantize(node);
    if (op == "DequantizeLinear") return Dequantize(node);
    if (op == "QLinearConv") return Conv(node);
    if (op == "QLinearAdd") return Add(node);
    if (op == "QLinearGlobalAveragePool") return GlobalAveragePool(node);
    if (op == "MaxPool") return MaxPool(node);
    return Status::Unsupported("operator " + op + (node.domain().empty() ? "" : " (" + node.domain() + ")") +
                               " (" + NodeLabel(node) + ") is not supported by the libtorch engine, which runs " +
                               kOnnxTorchOperators + "; use engine \"opencv\" for this model");
  }

  // --- operands -------------------------------------------------------------

  Status NeedInputs(const onnx::NodeProto& node, int min_count) const {
    if (node.input_size() < min_count || node.output_size() < 1) {
      return Status::InvalidArgument(NodeLabel(node) + " has " + std::to_string(node.input_size()) +
                                     " inputs, expected at least " + std::to_string(min_count));
    }
    return Status::Ok();
  }

  Result<const Value*> Activation(const onnx::NodeProto& node, int index) const {
    auto it = values_.find(node.input(index));
    if (it == values_.end()) {
      return Status::InvalidArgument(NodeLabel(node) + ": input '" + node.input(index) +
                                     "' is not computed before it (nodes out of order, or a second graph input)");
    }
    return &it->second;
  }

  Result<torch::Tensor> Constant(const onnx::NodeProto& node, int index) const {
    auto it = index < node.input_size() ? initializers_.find(node.input(index)) : initializers_.end();
    if (it == initializers_.end()) {
      return Status::Unsupported(NodeLabel(node) + ": input " + std::to_string(index) +
                                 " must be a constant initializer");
    }
    return ToFloatTensor(*it->second);
  }

  // Scale and zero point at inputs (scale_index, scale_index + 1) as the
  // quantization of a value; a missing zero point means uint8 zero.
  Result<Value> Quantization(const onnx::NodeProto& node, int scale_index) const {
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor scale, Constant(node, scale_index));
    Value q;
    q.quantized = true;
    if (scale.numel() != 1) {
      return Status::Unsupported(NodeLabel(node) + ": per-channel activation scales are not supported");
    }
    q.scale = scale.item<float>();
    if (!(q.scale > 0.0) || !std::isfinite(q.scale)) {
      return Status::InvalidArgument(NodeLabel(node) + ": scale must be a finite number > 0");
    }
    const int zp_index = scale_index + 1;
    if (zp_index < node.input_size() && !node.input(zp_index).empty()) {
      auto it = initializers_.find(node.input(zp_index));
      if (it == initializers_.end()) {
        return Status::Unsupported(NodeLabel(node) + ": the zero point must be a constant");
      }
      PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor zp, ToFloatTensor(*it->second));
      if (zp.numel() != 1) {
        return Status::Unsupported(NodeLabel(node) + ": per-channel zero points are not supported");
      }
      q.zero_point = static_cast<int64_t>(zp.item<float>());
      if (it->second->data_type() == onnx::TensorProto::INT8) {
        q.qmin = -128;
        q.qmax = 127;
      } else if (it->second->data_type() != onnx::TensorProto::UINT8) {
        return Status::Unsupported(NodeLabel(node) + ": zero points must be int8 or uint8");
      }
    }
    return q;
  }

  // The quantized operand at input `index`, whose scale and zero point
  // follow it. It must arrive with the quantization the node declares for it
  // (requantizing between layers is not implemented), so its variable's
  // dequantized values are what the node expects.
  Result<const Value*> QuantizedInput(const onnx::NodeProto& node, int index) const {
    PIXSEEK_ASSIGN_OR_RETURN(const Value* in, Activation(node, index));
    PIXSEEK_ASSIGN_OR_RETURN(Value declared, Quantization(node, index + 1));
    if (!in->quantized) {
      return Status::InvalidArgument(NodeLabel(node) + ": input is not a quantized tensor");
    }
    const bool same = std::abs(in->scale - declared.scale) <= 1e-6 * declared.scale &&
                      in->zero_point == declared.zero_point && in->qmin == declared.qmin;
    if (!same) {
      return Status::Unsupported(NodeLabel(node) +
                                 ": its input is quantized differently from the tensor that feeds it "
                                 "(requantization is not supported)");
    }
    return in;
  }

  Result<std::vector<int64_t>> Ints(const onnx::NodeProto& node, const char* name,
                                    std::vector<int64_t> fallback) const {
    for (const auto& a : node.attribute()) {
      if (a.name() == name) return std::vector<int64_t>(a.ints().begin(), a.ints().end());
    }
    return fallback;
  }

  int64_t Int(const onnx::NodeProto& node, const char* name, int64_t fallback) const {
    for (const auto& a : node.attribute()) {
      if (a.name() == name) return a.i();
    }
    return fallback;
  }

  // Symmetric 2-D padding from ONNX pads [top, left, bottom, right].
  Result<std::vector<int64_t>> Padding(const onnx::NodeProto& node) const {
    for (const auto& a : node.attribute()) {
      if (a.name() == "auto_pad" && a.s() != "NOTSET" && a.s() != "VALID") {
        return Status::Unsupported(NodeLabel(node) + ": auto_pad " + a.s() + " is not supported");
      }
    }
    PIXSEEK_ASSIGN_OR_RETURN(auto pads, Ints(node, "pads", {0, 0, 0, 0}));
    if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3]) {
      return Status::Unsupported(NodeLabel(node) + ": only symmetric 2-D padding is supported, got " +
                                 IntList(pads));
    }
    return std::vector<int64_t>{pads[0], pads[1]};
  }

  std::string NewVar() { return "v" + std::to_string(next_var_++); }

  std::string Buffer(torch::Tensor t) {
    const std::string name = "c" + std::to_string(next_buffer_++);
    module_.register_buffer(name, std::move(t));
    return "self." + name;
  }

  // Emits `var = clamp(expr)` into the range of `q` and records the output.
  void EmitQuantized(const onnx::NodeProto& node, const std::string& expr, Value q) {
    q.var = NewVar();
    source_ << "    " << q.var << " = torch.clamp(" << expr << ", " << Num(q.lo()) << ", "
            << Num(q.hi()) << ")\n";
    values_[node.output(0)] = q;
  }

  // --- operators ------------------------------------------------------------

  Status Quantize(const onnx::NodeProto& node) {
    PIXSEEK_RETURN_IF_ERROR(NeedInputs(node, 2));
    PIXSEEK_ASSIGN_OR_RETURN(const Value* x, Activation(node, 0));
    if (x->quantized) return Status::Unsupported(NodeLabel(node) + ": requantization is not supported");
    PIXSEEK_ASSIGN_OR_RETURN(Value q, Quantization(node, 1));
    EmitQuantized(node, x->var, q);
    return Status::Ok();
  }

  Status Dequantize(const onnx::NodeProto& node) {
    PIXSEEK_RETURN_IF_ERROR(NeedInputs(node, 2));
    PIXSEEK_ASSIGN_OR_RETURN(const Value* x, QuantizedInput(node, 0));
    Value out = *x;  // already holds the dequantized values
    out.quantized = false;
    values_[node.output(0)] = out;
    return Status::Ok();
  }

  // y = conv(x, (w - w_zp) * w_scale) + bias * x_scale * w_scale, in y's range.
  Status Conv(const onnx::NodeProto& node) {
    PIXSEEK_RETURN_IF_ERROR(NeedInputs(node, 8));
    PIXSEEK_ASSIGN_OR_RETURN(const Value* x, QuantizedInput(node, 0));
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor w, Constant(node, 3));
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor w_scale, Constant(node, 4));
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor w_zp, Constant(node, 5));
    PIXSEEK_ASSIGN_OR_RETURN(Value y_q, Quantization(node, 6));
    if (w.dim() != 4) return Status::Unsupported(NodeLabel(node) + ": only 2-D convolutions are supported");
    const int64_t m = w.size(0);
    auto per_channel = [&](const torch::Tensor& t, const char* what) -> Result<torch::Tensor> {
      if (t.numel() == 1) return t.reshape({1, 1, 1, 1});
      if (t.numel() == m) return t.reshape({m, 1, 1, 1});
      return Status::InvalidArgument(NodeLabel(node) + ": " + what + " has " + std::to_string(t.numel()) +
                                     " entries for " + std::to_string(m) + " output channels");
    };
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor ws, per_channel(w_scale, "weight scale"));
    PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor wz, per_channel(w_zp, "weight zero point"));
    torch::Tensor weight = (w - wz) * ws;
    if (channels_last_) weight = weight.contiguous(torch::MemoryFormat::ChannelsLast);
    std::string bias = "None";
    if (node.input_size() > 8 && !node.input(8).empty()) {
      PIXSEEK_ASSIGN_OR_RETURN(torch::Tensor b, Constant(node, 8));
      if (b.numel() != m) {
        return Status::InvalidArgument(NodeLabel(node) + ": bias has " + std::to_string(b.numel()) +
                                       " entries for " + std::to_string(m) + " output channels");
      }
      bias = Buffer(b.reshape({m}) * ws.reshape({-1}).expand({m}) * static_cast<float>(x->scale));
    }
    PIXSEEK_ASSIGN_OR_RETURN(auto kernel, Ints(node, "kernel_shape", {w.size(2), w.size(3)}));
    if (kernel != std::vector<int64_t>{w.size(2), w.size(3)}) {
      return Status::InvalidArgument(NodeLabel(node) + ": kernel_shape does not match the weights");
    }
    PIXSEEK_ASSIGN_OR_RETURN(auto strides, Ints(node, "strides", {1, 1}));
    PIXSEEK_ASSIGN_OR_RETURN(auto dilations, Ints(node, "dilations", {1, 1}));
    PIXSEEK_ASSIGN_OR_RETURN(auto pads, Padding(node));
    const int64_t group = Int(node, "group", 1);
    if (strides.size() != 2 || dilations.size() != 2 || group < 1) {
      return Status::InvalidArgument(NodeLabel(node) + ": malformed strides, dilations or group");
    }
    const std::string weight_var = Buffer(weight);
    EmitQuantized(node,
                  "torch.conv2d(" + x->var + ", " + weight_var + ", " + bias + ", " + IntList(strides) + ", " +
                      IntList(pads) + ", " + IntList(dilations) + ", " + std::to_string(group) + ")",
                  y_q);
    return Status::Ok();
  }

  // com.microsoft QLinearAdd: C = A + B in C's range.
  Status Add(const onnx::NodeProto& node) {
    PIXSEEK_RETURN_IF_ERROR(NeedInputs(node, 7));
    PIXSEEK_ASSIGN_OR_RETURN(const Value* a, QuantizedInput(node, 0));
    PIXSEEK_ASSIGN_OR_RETURN(const Value* b, QuantizedInput(node, 3));
    PIXSEEK_ASSIGN_OR_RETURN(Value c_q, Quantization(node, 6));
    EmitQuantized(node, a->var + " + " + b->var, c_q);
    return Status::Ok();
  }

  // com.microsoft QLinearGlobalAveragePool (NCHW only).
  Status GlobalAveragePool(const onnx::NodeProto& node) {
    PIXSEEK_RETURN_IF_ERROR(NeedInputs(node, 4));
    if (Int(node, "channels_last", 0) != 0) {
      return Status::Unsupported(NodeLabel(node) + ": channels_last = 1 is not supported");
    }
    PIXSEEK_ASSIGN_OR_RETURN(const Value* x, QuantizedInput(node, 0));
    PIXSEEK_ASSIGN_OR_RETURN(Value y_q, Quantization(node, 3));
    EmitQuantized(node, "torch.mean(" + x->var + ", [2, 3], True)", y_q);
    return Status::Ok();
  }

  // MaxPool on a quantized or float tensor: taking maxima commutes with
  // dequantization, so the quantization passes through.
  Status MaxPool(const onnx::NodeProto& node) {
    PIXSEEK_RETURN_IF_ERROR(NeedInputs(node, 1));
    PIXSEEK_ASSIGN_OR_RETURN(const Value* x, Activation(node, 0));
    PIXSEEK_ASSIGN_OR_RETURN(auto kernel, Ints(node, "kernel_shape", {}));
    PIXSEEK_ASSIGN_OR_RETURN(auto strides, Ints(node, "strides", {1, 1}));
    PIXSEEK_ASSIGN_OR_RETURN(auto dilations, Ints(node, "dilations", {1, 1}));
    PIXSEEK_ASSIGN_OR_RETURN(auto pads, Padding(node));
    if (kernel.size() != 2 || strides.size() != 2 || dilations.size() != 2) {
      return Status::Unsupported(NodeLabel(node) + ": only 2-D max pooling is supported");
    }
    if (node.output_size() > 1 && !node.output(1).empty()) {
      return Status::Unsupported(NodeLabel(node) + ": the Indices output is not supported");
    }
    Value out = *x;
    out.var = NewVar();
    source_ << "    " << out.var << " = torch.max_pool2d(" << x->var << ", " << IntList(kernel) << ", "
            << IntList(strides) << ", " << IntList(pads) << ", " << IntList(dilations) << ", "
            << (Int(node, "ceil_mode", 0) != 0 ? "True" : "False") << ")\n";
    values_[node.output(0)] = out;
    return Status::Ok();
  }

  const onnx::GraphProto& graph_;
  const bool channels_last_;
  std::map<std::string, const onnx::TensorProto*> initializers_;
  std::map<std::string, Value> values_;
  torch::jit::Module module_{"OnnxGraph"};
  std::ostringstream source_;
  int next_var_ = 0;
  int next_buffer_ = 0;
};

}  // namespace

Result<torch::jit::Module> TranslateQuantizedOnnx(const std::filesystem::path& model_file,
                                                  const std::string& output, bool channels_last) {
  std::ifstream in(model_file, std::ios::binary);
  if (!in) return Status::NotFound("cannot open model file " + model_file.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes) || !model.has_graph()) {
    return Status::InvalidArgument(model_file.filename().string() +
                                   " is not an ONNX model (it does not parse as one, or has no graph)");
  }
  Translator translator(model.graph(), channels_last);
  try {
    return translator.Run(output);
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("translating ") + model_file.filename().string() +
                            " failed: " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("translating ") + model_file.filename().string() +
                            " failed: " + e.what());
  }
}

}  // namespace pixseek
