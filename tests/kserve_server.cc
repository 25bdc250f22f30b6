// The KServe v2 test server (see kserve_server.h): cpp-httplib on 127.0.0.1,
// nlohmann-json for the protocol's JSON, OpenCV DNN for the network.
#include "kserve_server.h"

#include <chrono>
#include <cstddef>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "test_util.h"

namespace pixseek::testing {
namespace {

using Json = nlohmann::json;

constexpr char kHeaderLength[] = "Inference-Header-Content-Length";

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// The protocol's error reply: an HTTP error status and {"error": "..."}.
void ReplyError(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(Json{{"error", message}}.dump(), "application/json");
}

bool FlattenNumbers(const Json& data, std::vector<float>* out, int depth = 0) {
  if (depth > 16) return false;
  for (const Json& v : data) {
    if (v.is_array()) {
      if (!FlattenNumbers(v, out, depth + 1)) return false;
    } else if (v.is_number()) {
      out->push_back(v.get<float>());
    } else {
      return false;
    }
  }
  return true;
}

Json MetadataTensor(const std::string& name, const std::string& datatype,
                    const std::vector<int64_t>& shape) {
  return Json{{"name", name}, {"datatype", datatype}, {"shape", shape}};
}

}  // namespace

struct KServeTestServer::Impl {
  KServeModelSpec spec;
  std::mutex net_mu;
  cv::dnn::Net net;  // guarded by net_mu (forward mutates the net)
  httplib::Server server;
  std::thread thread;
};

KServeTestServer::KServeTestServer(KServeModelSpec spec) : impl_(std::make_unique<Impl>()) {
  impl_->spec = std::move(spec);
}

KServeTestServer::~KServeTestServer() { Stop(); }

void KServeTestServer::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

std::string KServeTestServer::Start() {
  Impl& im = *impl_;
  const KServeModelSpec& spec = im.spec;
  try {
    im.net = cv::dnn::readNetFromONNX(spec.onnx_file.string());
    im.net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    im.net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  } catch (const cv::Exception& e) {
    return std::string("cannot load ") + spec.onnx_file.string() + ": " + e.what();
  }
  if (im.net.empty()) return "cannot load " + spec.onnx_file.string();

  // A model path names the served model when the name matches and the
  // version, if given, is the one served.
  auto known = [&spec](const httplib::Request& req) {
    const std::string version = req.matches.size() > 2 ? req.matches[2].str() : "";
    return req.matches[1].str() == spec.name && (version.empty() || version == spec.version);
  };
  auto unknown_message = [](const httplib::Request& req) {
    return "Request for unknown model: '" + req.matches[1].str() + "'" +
           (req.matches.size() > 2 && req.matches[2].length() > 0
                ? " version " + req.matches[2].str()
                : std::string()) +
           " is not found";
  };

  // Health: 200 means true, 4xx false, with an empty body.
  im.server.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
  });
  im.server.Get("/v2/health/ready", [this](const httplib::Request&, httplib::Response& res) {
    res.status = ready_ ? 200 : 400;
  });
  im.server.Get("/v2", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(Json{{"name", "pixseek-kserve-test-server"},
                         {"version", "1"},
                         {"extensions", {"binary_tensor_data"}}}
                        .dump(),
                    "application/json");
  });
  const std::string model_re = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
  im.server.Get(model_re + "/ready",
                [this, known](const httplib::Request& req, httplib::Response& res) {
                  res.status = known(req) && ready_ ? 200 : 400;
                });
  im.server.Get(model_re, [&spec, known, unknown_message](const httplib::Request& req,
                                                          httplib::Response& res) {
    if (!known(req)) return ReplyError(res, 400, unknown_message(req));
    Json meta = {{"name", spec.name},
                 {"versions", {spec.version}},
                 {"platform", "opencv_dnn_onnx"},
                 {"inputs", {MetadataTensor(spec.input_name, spec.input_datatype,
                                            spec.input_shape)}},
                 {"outputs", {MetadataTensor(spec.output_name, spec.output_datatype,
                                             spec.output_shape)}}};
    res.set_content(meta.dump(), "application/json");
  });

  im.server.Post(model_re + "/infer", [this, &im, &spec, known, unknown_message](
                                          const httplib::Request& req, httplib::Response& res) {
    if (!known(req)) return ReplyError(res, 400, unknown_message(req));
    const KServeFault fault = fault_;
    if (fault == KServeFault::kSlow) std::this_thread::sleep_for(std::chrono::seconds(1));
    if (fault == KServeFault::kServerError) return ReplyError(res, 500, "injected failure");
    if (fault == KServeFault::kGarbage) {
      res.set_content("\x01\x02 this is not an inference response {", "application/json");
      return;
    }

    // The JSON part, then (binary tensor data extension) the tensors' bytes.
    const std::string& body = req.body;
    size_t json_size = body.size();
    const bool binary_request = req.has_header(kHeaderLength);
    if (binary_request) {
      try {
        size_t used = 0;
        const std::string v = req.get_header_value(kHeaderLength);
        const unsigned long long n = std::stoull(v, &used);
        if (used != v.size() || n > body.size()) throw std::out_of_range("past the body");
        json_size = static_cast<size_t>(n);
      } catch (const std::exception&) {
        return ReplyError(res, 400, std::string("invalid ") + kHeaderLength + " header");
      }
    }
    Json request;
    try {
      request = Json::parse(body.substr(0, json_size));
    } catch (const Json::exception& e) {
      return ReplyError(res, 400, std::string("failed to parse the request JSON: ") + e.what());
    }
    if (!request.is_object() || !request.contains("inputs") || !request["inputs"].is_array()) {
      return ReplyError(res, 400, "the inference request has no \"inputs\" array");
    }
    const Json& inputs = request["inputs"];
    if (inputs.size() != 1) {
      return ReplyError(res, 400, "expected 1 inputs but got " + std::to_string(inputs.size()) +
                                      " inputs for model '" + spec.name + "'");
    }
    const Json& in = inputs[0];
    if (!in.is_object() || !in.contains("name") || !in["name"].is_string() ||
        in["name"].get<std::string>() != spec.input_name) {
      return ReplyError(res, 400, "unexpected inference input '" +
                                      (in.is_object() && in.contains("name") ? in["name"].dump()
                                                                             : std::string("?")) +
                                      "' for model '" + spec.name + "'");
    }
    if (!in.contains("datatype") || in["datatype"] != "FP32") {
      return ReplyError(res, 400, "inference input '" + spec.input_name +
                                      "' data-type must be 'FP32' for model '" + spec.name + "'");
    }
    std::vector<int64_t> shape;
    bool shape_ok = in.contains("shape") && in["shape"].is_array() &&
                    in["shape"].size() == spec.input_shape.size();
    if (shape_ok) {
      for (size_t d = 0; d < in["shape"].size(); ++d) {
        const Json& v = in["shape"][d];
        if (!v.is_number_integer() || v.get<int64_t>() < 1 ||
            (spec.input_shape[d] != -1 && v.get<int64_t>() != spec.input_shape[d])) {
          shape_ok = false;
          break;
        }
        shape.push_back(v.get<int64_t>());
      }
    }
    if (!shape_ok) {
      return ReplyError(res, 400, "unexpected shape for input '" + spec.input_name +
                                      "' for model '" + spec.name + "'. Expected " +
                                      ShapeText(spec.input_shape) + ", got " +
                                      (in.contains("shape") ? in["shape"].dump() : "none"));
    }
    size_t count = 1;
    for (int64_t d : shape) count *= static_cast<size_t>(d);

    std::vector<float> data;
    const Json* in_params =
        in.contains("parameters") && in["parameters"].is_object() ? &in["parameters"] : nullptr;
    if (in_params != nullptr && in_params->contains("binary_data_size")) {
      const Json& size = (*in_params)["binary_data_size"];
      const size_t binary_size = body.size() - json_size;
      if (!size.is_number_integer() || size.get<int64_t>() < 0 ||
          static_cast<size_t>(size.get<int64_t>()) != count * sizeof(float) ||
          binary_size != count * sizeof(float)) {
        return ReplyError(res, 400, "unexpected binary_data_size for input '" + spec.input_name +
                                        "': expected " + std::to_string(count * sizeof(float)) +
                                        " bytes, the request carries " +
                                        std::to_string(binary_size));
      }
      data.resize(count);
      std::memcpy(data.data(), body.data() + json_size, count * sizeof(float));
    } else {
      if (!in.contains("data") || !in["data"].is_array() || !FlattenNumbers(in["data"], &data)) {
        return ReplyError(res, 400, "input '" + spec.input_name + "' has no numeric \"data\"");
      }
      if (data.size() != count) {
        return ReplyError(res, 400, "unexpected number of elements for input '" +
                                        spec.input_name + "': shape " + ShapeText(shape) +
                                        " holds " + std::to_string(count) + ", got " +
                                        std::to_string(data.size()));
      }
    }

    // Which outputs, and whether each comes back as binary data.
    bool binary_default = false;
    if (request.contains("parameters") && request["parameters"].is_object() &&
        request["parameters"].contains("binary_data_output")) {
      binary_default = request["parameters"]["binary_data_output"] == true;
    }
    bool binary_reply = binary_default;
    if (request.contains("outputs")) {
      if (!request["outputs"].is_array()) {
        return ReplyError(res, 400, "\"outputs\" must be an array");
      }
      for (const Json& o : request["outputs"]) {
        if (!o.is_object() || !o.contains("name") || o["name"] != spec.output_name) {
          return ReplyError(res, 400, "unexpected inference output " +
                                          (o.is_object() && o.contains("name") ? o["name"].dump()
                                                                               : "?") +
                                          " for model '" + spec.name + "'");
        }
        if (o.contains("parameters") && o["parameters"].is_object() &&
            o["parameters"].contains("binary_data")) {
          binary_reply = o["parameters"]["binary_data"] == true;
        }
      }
    }

    cv::Mat result;
    try {
      const int dims[4] = {static_cast<int>(shape[0]), static_cast<int>(shape[1]),
                           static_cast<int>(shape[2]), static_cast<int>(shape[3])};
      cv::Mat blob(4, dims, CV_32F, data.data());
      std::lock_guard<std::mutex> lock(im.net_mu);
      im.net.setInput(blob);
      result = spec.output_layer.empty() ? im.net.forward() : im.net.forward(spec.output_layer);
      if (result.depth() != CV_32F) result.convertTo(result, CV_32F);
      result = result.clone();  // continuous, and no longer the net's buffer
    } catch (const cv::Exception& e) {
      return ReplyError(res, 500, std::string("inference failed: ") + e.what());
    }
    std::vector<int64_t> out_shape(result.size.p, result.size.p + result.dims);
    std::vector<float> out(result.ptr<float>(), result.ptr<float>() + result.total());
    if (fault == KServeFault::kWrongBatch && !out_shape.empty() && out_shape[0] > 0) {
      // A consistent tensor with one extra row.
      const size_t row = out.size() / static_cast<size_t>(out_shape[0]);
      const std::vector<float> last(out.end() - static_cast<std::ptrdiff_t>(row), out.end());
      out.insert(out.end(), last.begin(), last.end());
      out_shape[0] += 1;
    }

    Json output = {{"name", spec.output_name}, {"datatype", "FP32"}, {"shape", out_shape}};
    std::string tail;
    if (binary_reply) {
      size_t bytes = out.size() * sizeof(float);
      if (fault == KServeFault::kWrongBinarySize) bytes -= sizeof(float);
      output["parameters"] = {{"binary_data_size", bytes}};
      tail.assign(reinterpret_cast<const char*>(out.data()), bytes);
    } else {
      if (fault == KServeFault::kShortJsonData && !out.empty()) out.pop_back();
      output["data"] = out;
    }
    Json reply = {{"model_name", spec.name},
                  {"model_version", spec.version},
                  {"outputs", Json::array({output})}};
    if (request.contains("id")) reply["id"] = request["id"];
    std::string text = reply.dump();
    infer_count_++;
    last_request_binary_ = binary_request;
    last_reply_binary_ = binary_reply;
    last_batch_ = shape[0];
    if (!binary_reply) {
      res.set_content(text, "application/json");
      return;
    }
    size_t header_length = text.size();
    text += tail;
    if (fault == KServeFault::kTruncatedBinary) text.resize(header_length + tail.size() / 2);
    if (fault == KServeFault::kHeaderPastEnd) header_length = text.size() + 100;
    res.set_header(kHeaderLength, std::to_string(header_length));
    res.set_content(text, "application/octet-stream");
  });

  port_ = im.server.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) return "cannot bind 127.0.0.1";
  im.thread = std::thread([&im] { im.server.listen_after_bind(); });
  if (!WaitFor([&im] { return im.server.is_running(); }, std::chrono::seconds(5))) {
    return "the server did not start";
  }
  return "";
}

}  // namespace pixseek::testing
