// The KServe v2 embedder: a client of the Open Inference Protocol's HTTP/REST
// API (health, model readiness, model metadata, infer), with JSON tensors or
// Triton's binary tensor data extension. Images are preprocessed here exactly
// as for ONNX (embed/network_embedder.h), sent as one [N,3,H,W] FP32 tensor per
// batch, and the returned output is pooled and normalised here too, so a
// remote model gives the vectors the same network gives locally.
//
// cpp-httplib and nlohmann-json stay inside this file; their exceptions and
// every malformed reply become a Status, never a crash.
#include "embed/kserve_embedder.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "core/http_transport.h"
#include "embed/network_embedder.h"
#include "embed/preprocess.h"

namespace pixseek {
namespace {

using Json = nlohmann::json;

// Binary tensor data extension: the length of the JSON part of a body.
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";
// A dead host should fail fast even when the card allows slow inference.
constexpr int kMaxConnectTimeoutMs = 5000;
// Largest output tensor accepted, in elements (1 GiB of floats).
constexpr uint64_t kMaxOutputElements = uint64_t{1} << 28;
// Nested "data" arrays deeper than this are malformed, not a tensor.
constexpr int kMaxDataDepth = 16;

void AppendLittleEndian(const float* src, size_t n, std::string* out) {
  const size_t start = out->size();
  out->resize(start + n * sizeof(float));
  char* dst = out->data() + start;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, src + i, 4);
      for (int b = 0; b < 4; ++b) dst[4 * i + b] = static_cast<char>((u >> (8 * b)) & 0xff);
    }
  }
}

void ReadLittleEndian(const char* src, size_t n, float* dst) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint32_t u = 0;
      for (int b = 0; b < 4; ++b) {
        u |= static_cast<uint32_t>(static_cast<unsigned char>(src[4 * i + b])) << (8 * b);
      }
      std::memcpy(dst + i, &u, 4);
    }
  }
}

std::string JoinNames(const Json& tensors) {
  std::string out;
  for (const Json& t : tensors) {
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) continue;
    if (!out.empty()) out += ", ";
    out += "'" + t["name"].get<std::string>() + "'";
  }
  return out.empty() ? "none" : out;
}

// The shape of a metadata or response tensor; false when it is not an array
// of integers >= -1.
bool ReadShape(const Json& t, std::vector<int64_t>* shape) {
  auto it = t.find("shape");
  if (it == t.end() || !it->is_array()) return false;
  shape->clear();
  for (const Json& d : *it) {
    if (!d.is_number_integer()) return false;
    const int64_t v = d.get<int64_t>();
    if (v < -1) return false;
    shape->push_back(v);
  }
  return true;
}

std::string DimsString(const std::vector<int64_t>& dims) { return ShapeToString(dims); }

// Appends the numbers of a (possibly nested) JSON "data" array to `out`.
bool FlattenData(const Json& data, int depth, uint64_t limit, std::vector<float>* out) {
  if (depth > kMaxDataDepth) return false;
  for (const Json& v : data) {
    if (v.is_array()) {
      if (!FlattenData(v, depth + 1, limit, out)) return false;
    } else if (v.is_number()) {
      const double d = v.get<double>();
      // Out of float's range (or NaN) is malformed; converting it is undefined.
      if (out->size() >= limit || !(std::abs(d) <= std::numeric_limits<float>::max())) {
        return false;
      }
      out->push_back(static_cast<float>(d));
    } else {
      return false;
    }
  }
  return true;
}

// An output tensor read from an infer reply.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// An Embedder whose network runs on a KServe v2 server.
//
// Thread-safety: as NetworkEmbedder (Embed and EmbedPreprocessed share the
// HTTP client and scratch buffers). Owns its HTTP client; holds no
// connection open between requests.
class KServeEmbedder final : public NetworkEmbedder {
 public:
  explicit KServeEmbedder(ModelCard card)
      : NetworkEmbedder(std::move(card)),
        k_(this->card().kserve),
        client_(k_.server_url),
        model_path_("/v2/models/" + k_.remote_model +
                    (k_.remote_version.empty() ? "" : "/versions/" + k_.remote_version)),
        where_("KServe server " + k_.server_url + ", model '" + k_.remote_model +
               (k_.remote_version.empty() ? "" : "' version '" + k_.remote_version) + "'") {
    const int connect_ms = std::min(k_.timeout_ms, kMaxConnectTimeoutMs);
    client_.set_connection_timeout(connect_ms / 1000, (connect_ms % 1000) * 1000);
    client_.set_read_timeout(k_.timeout_ms / 1000, (k_.timeout_ms % 1000) * 1000);
    client_.set_write_timeout(k_.timeout_ms / 1000, (k_.timeout_ms % 1000) * 1000);
  }

  // GET /v2/health/ready, GET /v2/models/{name}[/versions/{v}]/ready and the
  // model metadata, checked against the card.
  Status Connect() {
    if (!client_.is_valid()) {
      return Status::InvalidArgument("model card: server_url \"" + k_.server_url +
                                     "\" is not a usable URL");
    }
    {
      httplib::Result res = client_.Get("/v2/health/ready");
      PIXSEEK_RETURN_IF_ERROR(Transport(res, "the server readiness check"));
      if (res->status != 200) {
        return Status::Unavailable("KServe server " + k_.server_url +
                                   " is not ready (GET /v2/health/ready answered HTTP " +
                                   std::to_string(res->status) + ErrorSuffix(res->body) + ")");
      }
    }
    {
      httplib::Result res = client_.Get(model_path_ + "/ready");
      PIXSEEK_RETURN_IF_ERROR(Transport(res, "the model readiness check"));
      if (res->status != 200) {
        return Status::Unavailable(where_ + " is not ready (GET " + model_path_ +
                                   "/ready answered HTTP " + std::to_string(res->status) +
                                   ErrorSuffix(res->body) + ")");
      }
    }
    httplib::Result res = client_.Get(model_path_);
    PIXSEEK_RETURN_IF_ERROR(Transport(res, "the model metadata request"));
    if (res->status != 200) return HttpError(res->status, "model metadata", res->body);
    Json meta;
    try {
      meta = Json::parse(res->body);
    } catch (const Json::exception& e) {
      return Status::DataLoss(where_ + ": model metadata is not JSON: " + e.what());
    }
    return CheckMetadata(meta);
  }

 private:
  size_t Dim() const { return static_cast<size_t>(card().dimension); }

  // A model with a fixed batch dimension takes exactly that many images.
  size_t batch_size() const override {
    return fixed_batch_ > 0 ? static_cast<size_t>(fixed_batch_)
                            : static_cast<size_t>(card().max_batch);
  }

  Status Transport(const httplib::Result& res, const std::string& what) const {
    if (res) return Status::Ok();
    return Status::Unavailable("KServe server " + k_.server_url + " did not answer " + what +
                               ": " + HttpTransportError(res.error()));
  }

  // ": <message>" from a {"error": "..."} body; "" when there is none.
  static std::string ErrorSuffix(const std::string& body) {
    const std::string message = ServerMessage(body);
    return message.empty() ? "" : ": " + message;
  }

  // The message of a {"error": "..."} body, else the start of the body.
  static std::string ServerMessage(const std::string& body) {
    try {
      Json j = Json::parse(body);
      if (j.is_object() && j.contains("error") && j["error"].is_string()) {
        return j["error"].get<std::string>();
      }
    } catch (const Json::exception&) {
    }
    std::string text = body.substr(0, 200);
    // Keep error messages printable on one line.
    for (char& c : text) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = ' ';
    }
    return text;
  }

  // An HTTP error reply to `what`, with the server's message.
  Status HttpError(int status, const std::string& what, const std::string& body) const {
    std::string message = where_ + ": " + what + " failed with HTTP " + std::to_string(status);
    const std::string server_message = ServerMessage(body);
    if (!server_message.empty()) message += ": " + server_message;
    if (status == 404) return Status::NotFound(message);
    if (status == 502 || status == 503 || status == 504) return Status::Unavailable(message);
    if (status >= 400 && status < 500) return Status::InvalidArgument(message);
    return Status::Internal(message);
  }

  // Finds the tensor called `name` in metadata array `key`.
  Result<const Json*> FindTensor(const Json& meta, const char* key, const std::string& name,
                                 const char* kind) const {
    auto it = meta.find(key);
    if (it == meta.end() || !it->is_array()) {
      return Status::DataLoss(where_ + ": model metadata has no \"" + std::string(key) +
                              "\" array");
    }
    for (const Json& t : *it) {
      if (t.is_object() && t.contains("name") && t["name"].is_string() &&
          t["name"].get<std::string>() == name) {
        return &t;
      }
    }
    return Status::FailedPrecondition(where_ + " has no " + kind + " tensor '" + name +
                                      "' (the card's " + kind + "_tensor); its " + key +
                                      ": " + JoinNames(*it));
  }

  Status CheckDatatype(const Json& t, const char* kind, const std::string& name,
                       const std::string& expected) const {
    auto it = t.find("datatype");
    const std::string got = it != t.end() && it->is_string() ? it->get<std::string>() : "?";
    if (got == expected) return Status::Ok();
    return Status::FailedPrecondition(where_ + ": " + kind + " '" + name + "' has datatype " + got +
                                      ", but pixseek " +
                                      (std::string(kind) == "input" ? "sends " : "reads ") +
                                      expected + " (card field " + kind +
                                      (std::string(kind) == "input" ? "_datatype)" : "_tensor)"));
  }

  Status CheckMetadata(const Json& meta) {
    if (!meta.is_object()) return Status::DataLoss(where_ + ": model metadata is not an object");
    PIXSEEK_ASSIGN_OR_RETURN(const Json* in,
                             FindTensor(meta, "inputs", k_.input_tensor, "input"));
    PIXSEEK_RETURN_IF_ERROR(CheckDatatype(*in, "input", k_.input_tensor, k_.input_datatype));
    std::vector<int64_t> shape;
    if (!ReadShape(*in, &shape)) {
      return Status::DataLoss(where_ + ": input '" + k_.input_tensor + "' has no valid shape");
    }
    const std::vector<int64_t> want = {-1, 3, card().preprocess.input_height, card().preprocess.input_width};
    bool fits = shape.size() == 4 && shape[0] != 0;
    for (size_t d = 1; fits && d < 4; ++d) fits = shape[d] == -1 || shape[d] == want[d];
    if (!fits) {
      return Status::FailedPrecondition(
          where_ + ": input '" + k_.input_tensor + "' has shape " + DimsString(shape) +
          ", but the card sends [N,3,input_height,input_width] = " + DimsString(want));
    }
    fixed_batch_ = shape[0] > 0 ? shape[0] : 0;

    PIXSEEK_ASSIGN_OR_RETURN(const Json* out,
                             FindTensor(meta, "outputs", k_.output_tensor, "output"));
    PIXSEEK_RETURN_IF_ERROR(CheckDatatype(*out, "output", k_.output_tensor, "FP32"));
    if (!ReadShape(*out, &shape)) {
      return Status::DataLoss(where_ + ": output '" + k_.output_tensor +
                              "' has no valid shape");
    }
    // Which axis holds the feature dimension, and which ranks the card's
    // pooling accepts ([N,C,H,W], [N,D] or [N,T,D]).
    const Pooling p = card().output.pooling;
    bool rank_ok = PoolingAcceptsRank(p, shape.size());
    if (p == Pooling::kNone) {
      // Unknown sizes (-1) in the metadata may be the 1s of [N,D,1,1].
      rank_ok = shape.size() == 2 ||
                (shape.size() == 4 && (shape[2] == 1 || shape[2] == -1) &&
                 (shape[3] == 1 || shape[3] == -1));
    }
    const size_t axis = shape.size() == 3 && p != Pooling::kNone ? 2 : 1;
    const std::string expected(PoolingShapes(p));
    if (!rank_ok) {
      return Status::FailedPrecondition(where_ + ": output '" + k_.output_tensor +
                                        "' has shape " + DimsString(shape) + ", but pooling \"" +
                                        std::string(ToString(p)) + "\" needs " + expected);
    }
    if (shape[axis] != -1 && shape[axis] != card().dimension) {
      return Status::FailedPrecondition(
          where_ + ": output '" + k_.output_tensor + "' has shape " + DimsString(shape) +
          ", whose feature dimension " + std::to_string(shape[axis]) +
          " is not the card's dimension " + std::to_string(card().dimension));
    }
    return Status::Ok();
  }

  // Runs n <= batch_size() preprocessed images at `input` and writes n pooled
  // vectors to `out`. A model with a fixed batch gets zero images as padding.
  Status RunBatch(const float* input, size_t n, float* out) override {
    const size_t per_image = preprocessed_size();
    size_t sent = n;
    if (fixed_batch_ > 0 && n != static_cast<size_t>(fixed_batch_)) {
      sent = static_cast<size_t>(fixed_batch_);
      padded_.assign(sent * per_image, 0.0f);
      std::copy(input, input + n * per_image, padded_.begin());
      input = padded_.data();
    }
    PIXSEEK_ASSIGN_OR_RETURN(Tensor result, Infer(input, sent));
    if (result.shape.empty() || result.shape[0] != static_cast<int64_t>(sent)) {
      return Status::DataLoss(where_ + ": infer reply has output shape " +
                              DimsString(result.shape) + " for a batch of " +
                              std::to_string(sent));
    }
    pooled_.resize(sent * Dim());
    Status pooled = PoolFeatures(card(), result.data.data(), result.shape,
                                 static_cast<int>(sent), pooled_.data());
    if (!pooled.ok()) return Status::DataLoss(where_ + ": infer reply: " + pooled.message());
    std::copy(pooled_.begin(), pooled_.begin() + n * Dim(), out);
    return Status::Ok();
  }

  // POST /v2/models/{name}[/versions/{v}]/infer with one [n,3,H,W] input.
  Result<Tensor> Infer(const float* input, size_t n) {
    const size_t count = n * preprocessed_size();
    Json in = {{"name", k_.input_tensor},
               {"shape", {static_cast<int64_t>(n), 3, card().preprocess.input_height, card().preprocess.input_width}},
               {"datatype", k_.input_datatype}};
    Json out = {{"name", k_.output_tensor}};
    std::string body;
    std::string content_type;
    httplib::Headers headers;
    try {
      if (k_.binary_data) {
        in["parameters"] = {{"binary_data_size", static_cast<int64_t>(count * sizeof(float))}};
        out["parameters"] = {{"binary_data", true}};
        body = Json{{"inputs", Json::array({in})}, {"outputs", Json::array({out})}}.dump();
        headers.emplace(kHeaderLength, std::to_string(body.size()));
        AppendLittleEndian(input, count, &body);
        content_type = "application/octet-stream";
      } else {
        in["data"] = std::vector<float>(input, input + count);
        body = Json{{"inputs", Json::array({in})}, {"outputs", Json::array({out})}}.dump();
        content_type = "application/json";
      }
    } catch (const Json::exception& e) {
      return Status::Internal(std::string("cannot encode the infer request: ") + e.what());
    }
    httplib::Result res = client_.Post(model_path_ + "/infer", headers, body, content_type);
    PIXSEEK_RETURN_IF_ERROR(Transport(res, "the infer request"));
    if (res->status != 200) return HttpError(res->status, "infer", res->body);
    return ParseInferReply(*res);
  }

  // Reads the card's output tensor from an infer reply: JSON, or JSON
  // followed by binary tensors when Inference-Header-Content-Length is set.
  Result<Tensor> ParseInferReply(const httplib::Response& res) const {
    PIXSEEK_ASSIGN_OR_RETURN(size_t json_size, JsonPartSize(res));
    const std::string_view body = res.body;
    const std::string_view binary = body.substr(json_size);
    Json reply;
    try {
      reply = Json::parse(body.substr(0, json_size));
    } catch (const Json::exception& e) {
      return Status::DataLoss(where_ + ": infer reply is not JSON: " + e.what());
    }
    if (!reply.is_object() || !reply.contains("outputs") || !reply["outputs"].is_array()) {
      return Status::DataLoss(where_ + ": infer reply has no \"outputs\" array");
    }
    PIXSEEK_ASSIGN_OR_RETURN(OutputRef out, FindOutput(reply["outputs"], binary.size()));
    PIXSEEK_RETURN_IF_ERROR(CheckDatatype(*out.json, "output", k_.output_tensor, "FP32"));
    Tensor t;
    PIXSEEK_ASSIGN_OR_RETURN(const uint64_t elements, ReadOutputShape(*out.json, &t.shape));
    PIXSEEK_RETURN_IF_ERROR(ReadOutputData(out, binary, elements, &t));
    return t;
  }

  // The JSON part's length: the whole body, or what the header says.
  Result<size_t> JsonPartSize(const httplib::Response& res) const {
    if (!res.has_header(kHeaderLength)) return res.body.size();
    const std::string v = res.get_header_value(kHeaderLength);
    uint64_t parsed = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), parsed);
    if (ec != std::errc() || end != v.data() + v.size()) {
      return Status::DataLoss(where_ + ": infer reply has a malformed " +
                              std::string(kHeaderLength) + " \"" + v + "\"");
    }
    if (parsed > res.body.size()) {
      return Status::DataLoss(where_ + ": infer reply is truncated: its JSON part should be " +
                              std::to_string(parsed) + " bytes but the body has " +
                              std::to_string(res.body.size()));
    }
    return static_cast<size_t>(parsed);
  }

  // The card's output among the reply's outputs, with where its binary data
  // starts (binary tensors follow the JSON in the order of the outputs) and
  // its declared size (-1: it comes as JSON "data").
  struct OutputRef {
    const Json* json = nullptr;
    uint64_t offset = 0;
    int64_t binary_size = -1;
  };
  Result<OutputRef> FindOutput(const Json& outputs, size_t binary_bytes) const {
    OutputRef found;
    uint64_t offset = 0;
    for (const Json& o : outputs) {
      if (!o.is_object()) return Status::DataLoss(where_ + ": infer reply output is not an object");
      int64_t size = -1;
      auto params = o.find("parameters");
      if (params != o.end() && params->is_object() && params->contains("binary_data_size")) {
        const Json& s = (*params)["binary_data_size"];
        if (!s.is_number_integer() || s.get<int64_t>() < 0) {
          return Status::DataLoss(where_ + ": infer reply has a bad binary_data_size");
        }
        size = s.get<int64_t>();
      }
      if (o.contains("name") && o["name"].is_string() &&
          o["name"].get<std::string>() == k_.output_tensor) {
        found = OutputRef{&o, offset, size};
      }
      if (size >= 0) offset += static_cast<uint64_t>(size);
    }
    if (offset != binary_bytes) {
      return Status::DataLoss(where_ + ": infer reply carries " + std::to_string(binary_bytes) +
                              " bytes of binary tensor data, but its outputs declare " +
                              std::to_string(offset));
    }
    if (found.json == nullptr) {
      return Status::Internal(where_ + ": infer reply has no output '" + k_.output_tensor +
                              "'; it has " + JoinNames(outputs));
    }
    return found;
  }

  // The output's shape into `shape`; returns its element count, bounded.
  Result<uint64_t> ReadOutputShape(const Json& output, std::vector<int64_t>* shape) const {
    if (!ReadShape(output, shape) ||
        std::any_of(shape->begin(), shape->end(), [](int64_t d) { return d < 0; })) {
      return Status::DataLoss(where_ + ": infer reply output '" + k_.output_tensor +
                              "' has no valid shape");
    }
    uint64_t elements = 1;
    for (int64_t d : *shape) {
      if (d != 0 && elements > kMaxOutputElements / static_cast<uint64_t>(d)) {
        return Status::DataLoss(where_ + ": infer reply output shape " + DimsString(*shape) +
                                " is too large");
      }
      elements *= static_cast<uint64_t>(d);
    }
    if (elements > kMaxOutputElements) {
      return Status::DataLoss(where_ + ": infer reply output shape " + DimsString(*shape) +
                              " is too large");
    }
    return elements;
  }

  // The output's values, from its binary data or its JSON "data".
  Status ReadOutputData(const OutputRef& out, std::string_view binary, uint64_t elements,
                        Tensor* t) const {
    if (out.binary_size >= 0) {
      if (static_cast<uint64_t>(out.binary_size) != elements * sizeof(float)) {
        return Status::DataLoss(where_ + ": infer reply output '" + k_.output_tensor +
                                "' has shape " + DimsString(t->shape) + " (" +
                                std::to_string(elements * sizeof(float)) +
                                " bytes of FP32) but binary_data_size " +
                                std::to_string(out.binary_size));
      }
      t->data.resize(elements);
      ReadLittleEndian(binary.data() + out.offset, elements, t->data.data());
      return Status::Ok();
    }
    auto data = out.json->find("data");
    if (data == out.json->end() || !data->is_array()) {
      return Status::DataLoss(where_ + ": infer reply output '" + k_.output_tensor +
                              "' has neither \"data\" nor binary_data_size");
    }
    t->data.reserve(elements);
    if (!FlattenData(*data, 0, elements, &t->data) || t->data.size() != elements) {
      return Status::DataLoss(where_ + ": infer reply output '" + k_.output_tensor +
                              "' has shape " + DimsString(t->shape) + " (" +
                              std::to_string(elements) +
                              " numbers) but its \"data\" does not hold that many numbers");
    }
    return Status::Ok();
  }

  const KServeSection& k_;  // card().kserve
  httplib::Client client_;
  const std::string model_path_;  // "/v2/models/{name}[/versions/{v}]"
  const std::string where_;       // names server and model in messages
  int64_t fixed_batch_ = 0;       // > 0: the model's input has this fixed batch size
  std::vector<float> padded_;     // scratch: a batch padded to fixed_batch_
  std::vector<float> pooled_;     // scratch: pooled vectors of one batch
};

}  // namespace

Result<std::unique_ptr<Embedder>> OpenKServeEmbedder(const ModelCard& card) {
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  if (card.runtime != Runtime::kKServe) {
    return Status::InvalidArgument("OpenKServeEmbedder: card runtime is " +
                                   std::string(ToString(card.runtime)));
  }
  try {
    auto embedder = std::make_unique<KServeEmbedder>(card);
    PIXSEEK_RETURN_IF_ERROR(embedder->Connect());
    PIXSEEK_RETURN_IF_ERROR(embedder->SelfCheck());
    return std::unique_ptr<Embedder>(std::move(embedder));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("KServe client failed: ") + e.what());
  }
}

}  // namespace pixseek
