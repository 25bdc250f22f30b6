// A small KServe v2 (Open Inference Protocol) HTTP/REST server for the tests.
// NVIDIA Triton cannot run on the test machines, so the remote embedder is
// tested against this server instead. It follows the protocol document
// (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/)
// and Triton's binary tensor data extension: server and model readiness,
// server and model metadata, and infer with JSON tensors (flat or nested
// "data") or binary tensors (Inference-Header-Content-Length), answering
// errors as {"error": "..."} with HTTP 400. It serves a real ONNX network run
// through OpenCV DNN, and can be told to misbehave (garbage, truncated binary
// data, ...) so that the client's error handling is tested too.
#ifndef PIXSEEK_TESTS_KSERVE_SERVER_H_
#define PIXSEEK_TESTS_KSERVE_SERVER_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace pixseek::testing {

// The one model the server serves.
struct KServeModelSpec {
  std::string name = "tiny";
  std::string version = "1";            // the only version served
  std::filesystem::path onnx_file;      // run with OpenCV DNN
  std::string output_layer;             // OpenCV layer to forward to; empty = net output
  std::string input_name = "input";
  std::string output_name = "features";
  std::string input_datatype = "FP32";  // reported in metadata; FP32 is all it runs
  std::string output_datatype = "FP32";
  std::vector<int64_t> input_shape = {-1, 3, 224, 224};  // metadata; -1 = any
  std::vector<int64_t> output_shape = {-1, 16, 1, 1};
};

// Ways the server can be told to misbehave on infer requests.
enum class KServeFault {
  kNone,
  kGarbage,            // 200 with a body that is not JSON
  kTruncatedBinary,    // binary reply cut short (header length still claims the JSON part)
  kHeaderPastEnd,      // Inference-Header-Content-Length larger than the body
  kWrongBinarySize,    // binary_data_size that does not match the shape
  kShortJsonData,      // JSON "data" with fewer numbers than the shape holds
  kWrongBatch,         // output shape with one row too many
  kServerError,        // HTTP 500 {"error": "injected failure"}
  kSlow,               // sleeps 1 s before answering
};

// Thread-safety: all methods may be called from the test thread while the
// server threads serve requests. Owns the httplib server and its thread.
class KServeTestServer {
 public:
  explicit KServeTestServer(KServeModelSpec spec);
  ~KServeTestServer();
  KServeTestServer(const KServeTestServer&) = delete;
  KServeTestServer& operator=(const KServeTestServer&) = delete;

  // Loads the model and listens on 127.0.0.1 on a free port. Returns an
  // error message, empty on success.
  std::string Start();
  // Stops listening (the port is then closed); idempotent.
  void Stop();

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  void set_fault(KServeFault fault) { fault_ = fault; }
  void set_ready(bool ready) { ready_ = ready; }

  // Infer requests answered with 200, and how the last one came.
  int infer_count() const { return infer_count_; }
  bool last_request_binary() const { return last_request_binary_; }
  bool last_reply_binary() const { return last_reply_binary_; }
  int64_t last_batch() const { return last_batch_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<KServeFault> fault_{KServeFault::kNone};
  std::atomic<bool> ready_{true};
  std::atomic<int> infer_count_{0};
  std::atomic<bool> last_request_binary_{false};
  std::atomic<bool> last_reply_binary_{false};
  std::atomic<int64_t> last_batch_{0};
};

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_KSERVE_SERVER_H_
