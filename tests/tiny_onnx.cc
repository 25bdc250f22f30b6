#include "tiny_onnx.h"

#include <cstring>
#include <fstream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pixseek/model_registry.h"

namespace pixseek::testing {
namespace {

// Minimal protobuf writer: varints and length-delimited fields are all an
// ONNX model needs. Field numbers below are those of onnx/onnx.proto.
class Proto {
 public:
  Proto& Int(int field, uint64_t value) {
    Key(field, 0);
    Varint(value);
    return *this;
  }
  Proto& Bytes(int field, std::string_view bytes) {
    Key(field, 2);
    Varint(bytes.size());
    buf_.append(bytes);
    return *this;
  }
  Proto& Message(int field, const Proto& msg) { return Bytes(field, msg.buf_); }
  const std::string& str() const { return buf_; }

 private:
  void Key(int field, int wire_type) { Varint((static_cast<uint64_t>(field) << 3) | wire_type); }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    buf_.push_back(static_cast<char>(v));
  }
  std::string buf_;
};

// onnx.proto field numbers.
namespace model { constexpr int kIrVersion = 1, kProducerName = 2, kGraph = 7, kOpsetImport = 8; }
namespace opset { constexpr int kDomain = 1, kVersion = 2; }
namespace graph {
constexpr int kNode = 1, kName = 2, kInitializer = 5, kInput = 11, kOutput = 12;
}
namespace node { constexpr int kInput = 1, kOutput = 2, kName = 3, kOpType = 4, kAttribute = 5; }
namespace attr { constexpr int kName = 1, kInts = 8, kType = 20, kTypeInts = 7; }
namespace tensor { constexpr int kDims = 1, kDataType = 2, kName = 8, kRawData = 9, kFloat = 1; }
namespace value_info { constexpr int kName = 1, kType = 2; }
namespace type_proto { constexpr int kTensorType = 1, kElemType = 1, kShape = 2; }
namespace shape { constexpr int kDim = 1, kDimValue = 1, kDimParam = 2; }

Proto IntsAttribute(const char* name, std::initializer_list<int64_t> values) {
  Proto a;
  a.Bytes(attr::kName, name);
  for (int64_t v : values) a.Int(attr::kInts, static_cast<uint64_t>(v));
  a.Int(attr::kType, attr::kTypeInts);
  return a;
}

Proto Node(const char* name, const char* op, std::initializer_list<const char*> inputs,
           const char* output) {
  Proto n;
  for (const char* in : inputs) n.Bytes(node::kInput, in);
  n.Bytes(node::kOutput, output);
  n.Bytes(node::kName, name);
  n.Bytes(node::kOpType, op);
  return n;
}

// A float tensor value info with a symbolic batch dimension "N".
Proto FloatValueInfo(const char* name, std::initializer_list<int64_t> dims_after_n) {
  Proto shp;
  shp.Message(shape::kDim, Proto().Bytes(shape::kDimParam, "N"));
  for (int64_t d : dims_after_n) {
    shp.Message(shape::kDim, Proto().Int(shape::kDimValue, static_cast<uint64_t>(d)));
  }
  Proto tensor_type;
  tensor_type.Int(type_proto::kElemType, tensor::kFloat).Message(type_proto::kShape, shp);
  Proto type;
  type.Message(type_proto::kTensorType, tensor_type);
  Proto vi;
  vi.Bytes(value_info::kName, name).Message(value_info::kType, type);
  return vi;
}

}  // namespace

std::vector<uint8_t> MakeTinyOnnxModel(int out_channels, uint32_t seed) {
  constexpr int kKernel = 8;
  // Weights: xorshift32, uniform in [-1, 1], little-endian float32.
  const size_t count = static_cast<size_t>(out_channels) * 3 * kKernel * kKernel;
  std::string raw(count * sizeof(float), '\0');
  uint32_t state = seed * 2654435761u + 0x9e3779b9u;
  if (state == 0) state = 1;
  for (size_t i = 0; i < count; ++i) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    float w = static_cast<float>(state) / 4294967295.0f * 2.0f - 1.0f;
    std::memcpy(&raw[i * sizeof(float)], &w, sizeof(float));  // x86 and ARM are little-endian
  }
  Proto weights;
  for (int64_t d : {static_cast<int64_t>(out_channels), int64_t{3}, int64_t{kKernel},
                    int64_t{kKernel}}) {
    weights.Int(tensor::kDims, static_cast<uint64_t>(d));
  }
  weights.Int(tensor::kDataType, tensor::kFloat).Bytes(tensor::kName, "W").Bytes(tensor::kRawData,
                                                                                  raw);

  Proto conv = Node("conv", "Conv", {"input", "W"}, "conv_out");
  conv.Message(node::kAttribute, IntsAttribute("kernel_shape", {kKernel, kKernel}));
  conv.Message(node::kAttribute, IntsAttribute("strides", {kKernel, kKernel}));
  conv.Message(node::kAttribute, IntsAttribute("pads", {0, 0, 0, 0}));

  Proto g;
  g.Message(graph::kNode, conv)
      .Message(graph::kNode, Node("relu", "Relu", {"conv_out"}, "relu_out"))
      .Message(graph::kNode, Node("gap", "GlobalAveragePool", {"relu_out"}, "features"))
      .Bytes(graph::kName, "pixseek_tiny")
      .Message(graph::kInitializer, weights)
      .Message(graph::kInput, FloatValueInfo("input", {3, 224, 224}))
      .Message(graph::kOutput, FloatValueInfo("features", {out_channels, 1, 1}));

  Proto m;
  m.Int(model::kIrVersion, 7)
      .Bytes(model::kProducerName, "pixseek-tests")
      .Message(model::kGraph, g)
      .Message(model::kOpsetImport, Proto().Bytes(opset::kDomain, "").Int(opset::kVersion, 12));
  const std::string& s = m.str();
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string TinyModelCardJson(int out_channels, const std::string& file) {
  nlohmann::json card = {
      {"name", "tiny"},
      {"runtime", "onnx"},
      {"file", file},
      {"input_width", 224},
      {"input_height", 224},
      {"resize_shorter", 224},
      {"crop", "center"},
      {"interpolation", "area"},
      {"pooling", "gap"},
      {"dimension", out_channels},
      {"l2_normalize", true},
      {"max_batch", 8},
  };
  return card.dump(2) + "\n";
}

Status InstallTinyModel(const std::filesystem::path& home, const std::filesystem::path& scratch,
                        int out_channels, uint32_t seed, const std::string& name) {
  const std::filesystem::path model_file = scratch / (name + ".onnx");
  const std::filesystem::path card_file = scratch / (name + ".json");
  const std::vector<uint8_t> model = MakeTinyOnnxModel(out_channels, seed);
  const std::string card = TinyModelCardJson(out_channels, name + ".onnx");
  std::ofstream(model_file, std::ios::binary)
      .write(reinterpret_cast<const char*>(model.data()), static_cast<std::streamsize>(model.size()));
  std::ofstream(card_file, std::ios::binary) << card;
  return ModelRegistry(home).Import(model_file, card_file, name).status();
}

}  // namespace pixseek::testing
