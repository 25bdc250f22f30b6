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
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pixseek/embedder.h"

namespace pixseek {
namespace {

using Json = nlohmann::json;

constexpr int kMaxInputSide = 4096;
constexpr int kMaxDimension = 1 << 20;
constexpr int kMaxBatch = 1024;

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
Status ValidateKServeSection(const KServeSection& k) {
  if (k.server_url.rfind("http://", 0) != 0 && k.server_url.rfind("https://", 0) != 0) {
    return Status::InvalidArgument(
        "model card: server_url must be http://HOST:PORT or https://HOST:PORT, got \"" +
        k.server_url + "\"");
  }
  const size_t host_start = k.server_url.find("://") + 3;
  if (host_start >= k.server_url.size() ||
      k.server_url.find_first_of("/?#", host_start) != std::string::npos) {
    return Status::InvalidArgument("model card: server_url must be scheme://HOST[:PORT] with no "
                                   "path, got \"" + k.server_url + "\"");
  }
  auto path_safe = [](const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
  };
  if (k.remote_model.empty() || !path_safe(k.remote_model) || k.remote_model == "." ||
      k.remote_model == "..") {
    return Status::InvalidArgument("model card: remote_model must be a model name (letters, "
                                   "digits, '_', '-', '.'), got \"" + k.remote_model + "\"");
  }
  if (!path_safe(k.remote_version) || k.remote_version == "." || k.remote_version == "..") {
    return Status::InvalidArgument("model card: remote_version must be empty or a version "
                                   "(letters, digits, '_', '-', '.'), got \"" +
                                   k.remote_version + "\"");
  }
  if (k.input_tensor.empty()) {
    return Status::InvalidArgument("model card: input_tensor must name the model's input");
  }
  if (k.output_tensor.empty()) {
    return Status::InvalidArgument("model card: output_tensor must name the model's output");
  }
  if (k.input_datatype != "FP32") {
    return Status::InvalidArgument("model card: input_datatype must be \"FP32\", got \"" +
                                   k.input_datatype + "\"");
  }
  return CheckRange("timeout_ms", k.timeout_ms, 1, 3'600'000);
}

// bf16 is a libtorch precision: runtime "torchscript", or "onnx" on an
// engine that may be libtorch.
Status CheckPrecision(const ModelCard& card) {
  if (card.precision == Precision::kBf16 && card.runtime != Runtime::kTorchScript &&
      !(card.runtime == Runtime::kOnnx && card.onnx.engine != Engine::kOpenCv)) {
    return Status::InvalidArgument(
        "model card: precision \"bf16\" needs runtime \"torchscript\" or an \"onnx\" model on "
        "engine \"libtorch\" or \"auto\"");
  }
  return Status::Ok();
}

// Parses an enumeration's name into *out; an absent name keeps the default.
template <typename E>
Status ParseEnumField(const std::optional<std::string>& name, E* out) {
  if (!name.has_value()) return Status::Ok();
  PIXSEEK_ASSIGN_OR_RETURN(*out, ParseCardEnum<E>(*name));
  return Status::Ok();
}

Status ReadOptionalString(const Json& obj, const char* key, std::optional<std::string>* out) {
  if (!obj.contains(key)) return Status::Ok();
  std::string value;
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, key, &value));
  *out = std::move(value);
  return Status::Ok();
}

// The enumerations of a card as written, parsed after every field is read
// (a wrong type anywhere is reported first, as before enumerations were
// parsed) and in the order Validate checked them when they were strings.
struct EnumNames {
  std::optional<std::string> runtime, engine, precision, crop, interpolation, channel_order,
      pooling;

  Status Read(const Json& obj) {
    PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "runtime", &runtime));
    PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "engine", &engine));
    PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "precision", &precision));
    return Status::Ok();
  }

  Status Parse(ModelCard* card) const {
    PIXSEEK_RETURN_IF_ERROR(ParseEnumField(runtime, &card->runtime));
    PIXSEEK_RETURN_IF_ERROR(ParseEnumField(engine, &card->onnx.engine));
    PIXSEEK_RETURN_IF_ERROR(ParseEnumField(precision, &card->precision));
    PIXSEEK_RETURN_IF_ERROR(CheckPrecision(*card));
    PIXSEEK_RETURN_IF_ERROR(ParseEnumField(crop, &card->preprocess.crop));
    PIXSEEK_RETURN_IF_ERROR(ParseEnumField(interpolation, &card->preprocess.interpolation));
    PIXSEEK_RETURN_IF_ERROR(ParseEnumField(channel_order, &card->preprocess.channel_order));
    return ParseEnumField(pooling, &card->output.pooling);
  }
};

// The keys of a trained model; "training" is an object kept as text.
Status ReadTrained(const Json& obj, TrainedSection* t) {
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "base", &t->base));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "base_sha256", &t->base_sha256));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "head", &t->head));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "head_sha256", &t->head_sha256));
  if (auto it = obj.find("training"); it != obj.end()) {
    if (!it->is_object()) {
      return Status::InvalidArgument("model card: \"training\" must be an object, got " +
                                     TypeName(*it));
    }
    t->training = it->dump();
  }
  return Status::Ok();
}

// Every field but the enumerations, in the order of card.json.
Status ReadFields(const Json& obj, ModelCard* card, EnumNames* names) {
  PreprocessSpec& pre = card->preprocess;
  KServeSection& k = card->kserve;
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "name", &card->name));
  PIXSEEK_RETURN_IF_ERROR(names->Read(obj));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "file", &card->file));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "sha256", &card->sha256));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "input_width", &pre.input_width));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "input_height", &pre.input_height));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "resize_shorter", &pre.resize_shorter));
  PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "crop", &names->crop));
  PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "interpolation", &names->interpolation));
  PIXSEEK_RETURN_IF_ERROR(ReadFloat(obj, "scale", &pre.scale));
  PIXSEEK_RETURN_IF_ERROR(ReadTriple(obj, "mean", &pre.mean));
  PIXSEEK_RETURN_IF_ERROR(ReadTriple(obj, "std", &pre.std));
  PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "channel_order", &names->channel_order));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "output_layer", &card->onnx.output_layer));
  PIXSEEK_RETURN_IF_ERROR(ReadOptionalString(obj, "pooling", &names->pooling));
  PIXSEEK_RETURN_IF_ERROR(ReadFloat(obj, "gem_p", &card->output.gem_p));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "dimension", &card->dimension));
  PIXSEEK_RETURN_IF_ERROR(ReadBool(obj, "l2_normalize", &card->output.l2_normalize));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "max_batch", &card->max_batch));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "max_keypoints", &card->sift_vlad.max_keypoints));
  PIXSEEK_RETURN_IF_ERROR(ReadBool(obj, "intra_normalize", &card->sift_vlad.intra_normalize));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "server_url", &k.server_url));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "remote_model", &k.remote_model));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "remote_version", &k.remote_version));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "input_tensor", &k.input_tensor));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "output_tensor", &k.output_tensor));
  PIXSEEK_RETURN_IF_ERROR(ReadString(obj, "input_datatype", &k.input_datatype));
  PIXSEEK_RETURN_IF_ERROR(ReadBool(obj, "binary_data", &k.binary_data));
  PIXSEEK_RETURN_IF_ERROR(ReadInt(obj, "timeout_ms", &k.timeout_ms));
  return ReadTrained(obj, &card->trained);
}

Status ValidatePreprocess(const PreprocessSpec& pre) {
  PIXSEEK_RETURN_IF_ERROR(CheckRange("input_width", pre.input_width, 1, kMaxInputSide));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("input_height", pre.input_height, 1, kMaxInputSide));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("resize_shorter", pre.resize_shorter, 1, kMaxInputSide));
  if (pre.crop == Crop::kCenter && pre.resize_shorter < std::max(pre.input_width, pre.input_height)) {
    return Status::InvalidArgument(
        "model card: resize_shorter (" + std::to_string(pre.resize_shorter) +
        ") must be at least the input size for crop \"center\" (" +
        std::to_string(std::max(pre.input_width, pre.input_height)) + ")");
  }
  return Status::Ok();
}

Status ValidateNormalisation(const PreprocessSpec& pre) {
  if (!std::isfinite(pre.scale) || pre.scale <= 0.0f) {
    return Status::InvalidArgument("model card: scale must be a finite number > 0");
  }
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(pre.mean[c])) {
      return Status::InvalidArgument("model card: mean entries must be finite numbers");
    }
    if (!std::isfinite(pre.std[c]) || pre.std[c] <= 0.0f) {
      return Status::InvalidArgument("model card: std entries must be > 0, got " +
                                     std::to_string(pre.std[c]) + " at index " +
                                     std::to_string(c));
    }
  }
  return Status::Ok();
}

Status ValidateSiftVlad(const ModelCard& card) {
  PIXSEEK_RETURN_IF_ERROR(
      CheckRange("max_keypoints", card.sift_vlad.max_keypoints, 1, 1 << 20));
  if (card.dimension % 128 != 0) {
    return Status::InvalidArgument(
        "model card: a sift-vlad dimension must be a multiple of 128 (clusters x 128), got " +
        std::to_string(card.dimension));
  }
  return Status::Ok();
}

// Files live beside the card: a bare file name, never a path.
Status CheckPlainFileName(const char* key, const std::string& file) {
  if (!file.empty() && (file == "." || file == ".." || file.find('/') != std::string::npos ||
                        file.find('\\') != std::string::npos ||
                        file.find('\0') != std::string::npos)) {
    return Status::InvalidArgument(std::string("model card: ") + key +
                                   " must be a plain file name, got \"" + file + "\"");
  }
  return Status::Ok();
}

Status ValidateFile(const ModelCard& card) {
  const TrainedSection& t = card.trained;
  for (const std::string* sum : {&card.sha256, &t.base_sha256, &t.head_sha256}) {
    if (!sum->empty() && !IsLowerHex64(*sum)) {
      return Status::InvalidArgument("model card: sha256 must be 64 lower-case hex digits");
    }
  }
  PIXSEEK_RETURN_IF_ERROR(CheckPlainFileName("file", card.file));
  PIXSEEK_RETURN_IF_ERROR(CheckPlainFileName("head", t.head));
  if (t.base.empty() && !t.head.empty()) {
    return Status::InvalidArgument("model card: a head needs the base model it was trained on");
  }
  return Status::Ok();
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
  EnumNames names;
  try {
    PIXSEEK_RETURN_IF_ERROR(ReadFields(obj, &card, &names));
  } catch (const Json::exception& e) {
    // The readers check types first; this is only a safety net.
    return Status::InvalidArgument(std::string("model card: ") + e.what());
  }
  PIXSEEK_RETURN_IF_ERROR(names.Parse(&card));
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  return card;
}

std::string ModelCard::ToJson() const {
  // Fixed key order, and floats printed as their shortest decimal form
  // (0.485, not 0.48500001430511475), which parses back to the same float.
  nlohmann::ordered_json obj = nlohmann::ordered_json::object();
  auto str = [](auto value) { return std::string(ToString(value)); };
  obj["name"] = name;
  obj["runtime"] = str(runtime);
  if (runtime == Runtime::kOnnx) obj["engine"] = str(onnx.engine);
  if (precision != Precision::kFp32) obj["precision"] = str(precision);
  obj["file"] = file;
  obj["sha256"] = sha256;
  obj["input_width"] = preprocess.input_width;
  obj["input_height"] = preprocess.input_height;
  obj["resize_shorter"] = preprocess.resize_shorter;
  obj["crop"] = str(preprocess.crop);
  obj["interpolation"] = str(preprocess.interpolation);
  obj["scale"] = ShortestDouble(preprocess.scale);
  const auto& mean = preprocess.mean;
  const auto& sd = preprocess.std;
  obj["mean"] = {ShortestDouble(mean[0]), ShortestDouble(mean[1]), ShortestDouble(mean[2])};
  obj["std"] = {ShortestDouble(sd[0]), ShortestDouble(sd[1]), ShortestDouble(sd[2])};
  obj["channel_order"] = str(preprocess.channel_order);
  obj["output_layer"] = onnx.output_layer;
  obj["pooling"] = str(output.pooling);
  // Only where it matters, so the cards of other models read as before.
  if (output.pooling == Pooling::kGem) obj["gem_p"] = ShortestDouble(output.gem_p);
  obj["dimension"] = dimension;
  obj["l2_normalize"] = output.l2_normalize;
  obj["max_batch"] = max_batch;
  if (runtime == Runtime::kSiftVlad) {
    obj["max_keypoints"] = sift_vlad.max_keypoints;
    obj["intra_normalize"] = sift_vlad.intra_normalize;
  }
  if (runtime == Runtime::kKServe) {
    obj["server_url"] = kserve.server_url;
    obj["remote_model"] = kserve.remote_model;
    obj["remote_version"] = kserve.remote_version;
    obj["input_tensor"] = kserve.input_tensor;
    obj["output_tensor"] = kserve.output_tensor;
    obj["input_datatype"] = kserve.input_datatype;
    obj["binary_data"] = kserve.binary_data;
    obj["timeout_ms"] = kserve.timeout_ms;
  }
  if (!trained.base.empty()) {
    obj["base"] = trained.base;
    obj["base_sha256"] = trained.base_sha256;
    obj["head"] = trained.head;
    obj["head_sha256"] = trained.head_sha256;
    obj["training"] = nlohmann::ordered_json::parse(trained.training, nullptr, false);
    if (obj["training"].is_discarded()) obj["training"] = nlohmann::ordered_json::object();
  }
  // Replace rather than throw on invalid UTF-8 in a name typed by a user.
  return obj.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

Status ModelCard::Validate() const {
  // Enumerations are valid by construction (FromJson parses them); what is
  // left are their combinations, the ranges and the per-runtime sections.
  PIXSEEK_RETURN_IF_ERROR(CheckPrecision(*this));
  PIXSEEK_RETURN_IF_ERROR(ValidatePreprocess(preprocess));
  if (dimension <= 0) {
    return Status::InvalidArgument("model card: dimension must be > 0, got " +
                                   std::to_string(dimension));
  }
  PIXSEEK_RETURN_IF_ERROR(CheckRange("dimension", dimension, 1, kMaxDimension));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("max_batch", max_batch, 1, kMaxBatch));
  if (runtime == Runtime::kSiftVlad) PIXSEEK_RETURN_IF_ERROR(ValidateSiftVlad(*this));
  if (runtime == Runtime::kKServe) PIXSEEK_RETURN_IF_ERROR(ValidateKServeSection(kserve));
  if (!std::isfinite(output.gem_p) || output.gem_p < 0.1f || output.gem_p > 100.0f) {
    return Status::InvalidArgument("model card: gem_p must be a number in 0.1..100");
  }
  PIXSEEK_RETURN_IF_ERROR(ValidateNormalisation(preprocess));
  return ValidateFile(*this);
}

}  // namespace pixseek
