// ModelCard: JSON parsing, printing and validation with nlohmann-json. Every
// nlohmann exception is caught here and becomes InvalidArgument naming the
// field, so a hand-edited card can never throw past this file.
#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pixseek/embedder.h"

namespace pixseek {
namespace {

using Json = nlohmann::json;

// Runtimes a card may name: "onnx" (OpenCV DNN, or libtorch; see engine), "torchscript" (libtorch;
// Unsupported in a build without it), "kserve" (a remote KServe v2 / Triton
// server) and "sift-vlad" (no network).
constexpr std::array<std::string_view, 4> kRuntimes = {"onnx", "torchscript", "kserve",
                                                       "sift-vlad"};
constexpr std::array<std::string_view, 3> kEngines = {"opencv", "libtorch", "auto"};
constexpr std::array<std::string_view, 2> kPrecisions = {"fp32", "bf16"};
constexpr std::array<std::string_view, 2> kCrops = {"center", "none"};
constexpr std::array<std::string_view, 3> kInterpolations = {"bilinear", "area", "bicubic"};
constexpr std::array<std::string_view, 2> kChannelOrders = {"RGB", "BGR"};
constexpr std::array<std::string_view, 6> kPoolings = {"gap", "gmp", "gem", "cls",
                                                       "mean_tokens", "none"};

constexpr int kMaxInputSide = 4096;
constexpr int kMaxDimension = 1 << 20;
constexpr int kMaxBatch = 1024;

template <size_t N>
bool OneOf(const std::string& value, const std::array<std::string_view, N>& allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

template <size_t N>
std::string Choices(const std::array<std::string_view, N>& allowed) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += ", ";
    out += "\"" + std::string(allowed[i]) + "\"";
  }
  return out;
}

template <size_t N>
Status CheckEnum(const char* field, const std::string& value,
                 const std::array<std::string_view, N>& allowed) {
  if (OneOf(value, allowed)) return Status::Ok();
  return Status::InvalidArgument("model card: unknown " + std::string(field) + " \"" + value +
                                 "\" (expected one of " + Choices(allowed) + ")");
}

Status CheckRange(const char* field, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return Status::Ok();
  return Status::InvalidArgument("model card: " + std::string(field) + " must be in " +
                                 std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                                 std::to_string(value));
}

Status FieldError(const char* field, const std::string& what) {
  return Status::InvalidArgument("model card: field \"" + std::string(field) + "\": " + what);
}

std::string TypeName(const Json& j) { return j.type_name(); }

// Each reader leaves *out untouched when the key is absent (struct default).
Status ReadString(const Json& obj, const char* key, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Ok();
  if (!it->is_string()) return FieldError(key, "expected a string, got " + TypeName(*it));
  *out = it->get<std::string>();
  return Status::Ok();
}

Status ReadInt(const Json& obj, const char* key, int* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Ok();
  if (!it->is_number_integer()) {
    return FieldError(key, "expected an integer, got " + TypeName(*it));
  }
  if (it->is_number_unsigned()) {
    uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return FieldError(key, "integer out of range");
    }
    *out = static_cast<int>(v);
    return Status::Ok();
  }
  int64_t v = it->get<int64_t>();
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    return FieldError(key, "integer out of range");
  }
  *out = static_cast<int>(v);
  return Status::Ok();
}

Status ReadFloat(const Json& obj, const char* key, float* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Ok();
  if (!it->is_number()) return FieldError(key, "expected a number, got " + TypeName(*it));
  *out = it->get<float>();
  return Status::Ok();
}

Status ReadBool(const Json& obj, const char* key, bool* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Ok();
  if (!it->is_boolean()) return FieldError(key, "expected true or false, got " + TypeName(*it));
  *out = it->get<bool>();
  return Status::Ok();
}

Status ReadTriple(const Json& obj, const char* key, std::array<float, 3>* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Ok();
  if (!it->is_array() || it->size() != 3) {
    return FieldError(key, "expected an array of 3 numbers");
  }
  std::array<float, 3> values{};
  for (size_t i = 0; i < 3; ++i) {
    const Json& v = (*it)[i];
    if (!v.is_number()) return FieldError(key, "expected an array of 3 numbers");
    values[i] = v.get<float>();
  }
  *out = values;
  return Status::Ok();
}

bool IsLowerHex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The double nearest to the shortest decimal that reads back as `f`.
double ShortestDouble(float f) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f);
  if (ec != std::errc()) return f;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

// The fields of runtime "kserve". Names go into URL paths, so they are kept to
// the characters Triton's model repository names use in practice.
Status ValidateKServeFields(const ModelCard& card) {
  if (card.server_url.rfind("http://", 0) != 0 && card.server_url.rfind("https://", 0) != 0) {
    return Status::InvalidArgument(
        "model card: server_url must be http://HOST:PORT or https://HOST:PORT, got \"" +
        card.server_url + "\"");
  }
  const size_t host_start = card.server_url.find("://") + 3;
  if (host_start >= card.server_url.size() ||
      card.server_url.find_first_of("/?#", host_start) != std::string::npos) {
    return Status::InvalidArgument("model card: server_url must be scheme://HOST[:PORT] with no "
                                   "path, got \"" + card.server_url + "\"");
  }
  auto path_safe = [](const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
  };
  if (card.remote_model.empty() || !path_safe(card.remote_model) || card.remote_model == "." ||
      card.remote_model == "..") {
    return Status::InvalidArgument("model card: remote_model must be a model name (letters, "
                                   "digits, '_', '-', '.'), got \"" + card.remote_model + "\"");
  }
  if (!path_safe(card.remote_version) || card.remote_version == "." ||
      card.remote_version == "..") {
    return Status::InvalidArgument("model card: remote_version must be empty or a version "
                                   "(letters, digits, '_', '-', '.'), got \"" +
                                   card.remote_version + "\"");
  }
  if (card.input_tensor.empty()) {
    return Status::InvalidArgument("model card: input_tensor must name the model's input");
  }
  if (card.output_tensor.empty()) {
    return Status::InvalidArgument("model card: output_tensor must name the model's output");
  }
  if (card.input_datatype != "FP32") {
    return Status::InvalidArgument("model card: input_datatype must be \"FP32\", got \"" +
                                   card.input_datatype + "\"");
  }
  return CheckRange("timeout_ms", card.timeout_ms, 1, 3'600'000);
}

}  // namespace

Result<ModelCard> ModelCard::FromJson(std::string_view json_text) {
  Json obj;
  try {
    obj = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("model card is not valid JSON: ") + e.what());
  }
  if (!obj.is_object()) {
    return Status::InvalidArgument("model card must be a JSON object, got " + TypeName(obj));
  }
  ModelCard card;
  try {
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "name", &card.name));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "runtime", &card.runtime));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "engine", &card.engine));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "precision", &card.precision));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "file", &card.file));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "sha256", &card.sha256));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "input_width", &card.input_width));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "input_height", &card.input_height));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "resize_shorter", &card.resize_shorter));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "crop", &card.crop));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "interpolation", &card.interpolation));
    PIXSEEK_RETURN_IF_ERROR(ReadFloat(obj, "scale", &card.scale));
    PIXSEEK_RETURN_IF_ERROR(ReadTriple(obj, "mean", &card.mean));
    PIXSEEK_RETURN_IF_ERROR(ReadTriple(obj, "std", &card.std));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "channel_order", &card.channel_order));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "output_layer", &card.output_layer));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "pooling", &card.pooling));
    PIXSEEK_RETURN_IF_ERROR(ReadFloat(obj, "gem_p", &card.gem_p));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "dimension", &card.dimension));
    PIXSEEK_RETURN_IF_ERROR(ReadBool(obj, "l2_normalize", &card.l2_normalize));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "max_batch", &card.max_batch));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "max_keypoints", &card.max_keypoints));
    PIXSEEK_RETURN_IF_ERROR(ReadBool(obj, "intra_normalize", &card.intra_normalize));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "server_url", &card.server_url));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "remote_model", &card.remote_model));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "remote_version", &card.remote_version));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "input_tensor", &card.input_tensor));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "output_tensor", &card.output_tensor));
    PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "input_datatype", &card.input_datatype));
    PIXSEEK_RETURN_IF_ERROR(ReadBool(obj, "binary_data", &card.binary_data));
    PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "timeout_ms", &card.timeout_ms));
  } catch (const Json::exception& e) {
    // The readers check types first; this is only a safety net.
    return Status::InvalidArgument(std::string("model card: ") + e.what());
  }
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  return card;
}

std::string ModelCard::ToJson() const {
  // Struct order, and floats printed as their shortest decimal form (0.485,
  // not 0.48500001430511475), which parses back to the same float.
  nlohmann::ordered_json obj = nlohmann::ordered_json::object();
  obj["name"] = name;
  obj["runtime"] = runtime;
  if (runtime == "onnx") obj["engine"] = engine;
  if (precision != "fp32") obj["precision"] = precision;
  obj["file"] = file;
  obj["sha256"] = sha256;
  obj["input_width"] = input_width;
  obj["input_height"] = input_height;
  obj["resize_shorter"] = resize_shorter;
  obj["crop"] = crop;
  obj["interpolation"] = interpolation;
  obj["scale"] = ShortestDouble(scale);
  obj["mean"] = {ShortestDouble(mean[0]), ShortestDouble(mean[1]), ShortestDouble(mean[2])};
  obj["std"] = {ShortestDouble(std[0]), ShortestDouble(std[1]), ShortestDouble(std[2])};
  obj["channel_order"] = channel_order;
  obj["output_layer"] = output_layer;
  obj["pooling"] = pooling;
  // Only where it matters, so the cards of other models read as before.
  if (pooling == "gem") obj["gem_p"] = ShortestDouble(gem_p);
  obj["dimension"] = dimension;
  obj["l2_normalize"] = l2_normalize;
  obj["max_batch"] = max_batch;
  if (runtime == "sift-vlad") {
    obj["max_keypoints"] = max_keypoints;
    obj["intra_normalize"] = intra_normalize;
  }
  if (runtime == "kserve") {
    obj["server_url"] = server_url;
    obj["remote_model"] = remote_model;
    obj["remote_version"] = remote_version;
    obj["input_tensor"] = input_tensor;
    obj["output_tensor"] = output_tensor;
    obj["input_datatype"] = input_datatype;
    obj["binary_data"] = binary_data;
    obj["timeout_ms"] = timeout_ms;
  }
  // Replace rather than throw on invalid UTF-8 in a name typed by a user.
  return obj.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

Status ModelCard::Validate() const {
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("runtime", runtime, kRuntimes));
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("engine", engine, kEngines));
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("precision", precision, kPrecisions));
  if (precision == "bf16" && runtime != "torchscript" && !(runtime == "onnx" && engine != "opencv")) {
    return Status::InvalidArgument(
        "model card: precision \"bf16\" needs runtime \"torchscript\" or an \"onnx\" model on "
        "engine \"libtorch\" or \"auto\"");
  }
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("crop", crop, kCrops));
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("interpolation", interpolation, kInterpolations));
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("channel_order", channel_order, kChannelOrders));
  PIXSEEK_RETURN_IF_ERROR(CheckEnum("pooling", pooling, kPoolings));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("input_width", input_width, 1, kMaxInputSide));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("input_height", input_height, 1, kMaxInputSide));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("resize_shorter", resize_shorter, 1, kMaxInputSide));
  if (crop == "center" && resize_shorter < std::max(input_width, input_height)) {
    return Status::InvalidArgument(
        "model card: resize_shorter (" + std::to_string(resize_shorter) +
        ") must be at least the input size for crop \"center\" (" +
        std::to_string(std::max(input_width, input_height)) + ")");
  }
  if (dimension <= 0) {
    return Status::InvalidArgument("model card: dimension must be > 0, got " +
                                   std::to_string(dimension));
  }
  PIXSEEK_RETURN_IF_ERROR(CheckRange("dimension", dimension, 1, kMaxDimension));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("max_batch", max_batch, 1, kMaxBatch));
  if (runtime == "sift-vlad") {
    PIXSEEK_RETURN_IF_ERROR(CheckRange("max_keypoints", max_keypoints, 1, 1 << 20));
    if (dimension % 128 != 0) {
      return Status::InvalidArgument(
          "model card: a sift-vlad dimension must be a multiple of 128 (clusters x 128), got " +
          std::to_string(dimension));
    }
  }
  if (runtime == "kserve") PIXSEEK_RETURN_IF_ERROR(ValidateKServeFields(*this));
  if (!std::isfinite(gem_p) || gem_p < 0.1f || gem_p > 100.0f) {
    return Status::InvalidArgument("model card: gem_p must be a number in 0.1..100");
  }
  if (!std::isfinite(scale) || scale <= 0.0f) {
    return Status::InvalidArgument("model card: scale must be a finite number > 0");
  }
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(mean[c])) {
      return Status::InvalidArgument("model card: mean entries must be finite numbers");
    }
    if (!std::isfinite(std[c]) || std[c] <= 0.0f) {
      return Status::InvalidArgument("model card: std entries must be > 0, got " +
                                     std::to_string(std[c]) + " at index " +
                                     std::to_string(c));
    }
  }
  if (!sha256.empty() && !IsLowerHex64(sha256)) {
    return Status::InvalidArgument("model card: sha256 must be 64 lower-case hex digits");
  }
  // The file lives beside the card: a bare file name, never a path.
  if (!file.empty() && (file == "." || file == ".." || file.find('/') != std::string::npos ||
                        file.find('\\') != std::string::npos ||
                        file.find('\0') != std::string::npos)) {
    return Status::InvalidArgument("model card: file must be a plain file name, got \"" + file +
                                   "\"");
  }
  return Status::Ok();
}

}  // namespace pixseek
