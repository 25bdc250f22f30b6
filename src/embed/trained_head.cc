// TrainedHead: the projection and classifier that `pixseek train` learns on
// a base model's features, their checksummed file, and applying them. FAISS's
// LinearTransform (BLAS) applies the projection, as it does PCA's.
#include "pixseek/trained_head.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>

#include <faiss/VectorTransform.h>

#include "embed/sealed_file.h"

namespace pixseek {
namespace {

constexpr std::string_view kHeadMagic = "PXHEAD01";
// Bounds that keep a damaged file from asking for absurd allocations.
constexpr uint32_t kMaxDimension = 1u << 16;
constexpr uint32_t kMaxClasses = 1u << 16;
constexpr uint32_t kMaxLabelBytes = 4096;

bool AllFinite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

template <typename T>
void Append(std::string* out, const T* data, size_t count) {
  out->append(reinterpret_cast<const char*>(data), count * sizeof(T));
}

// Reads the payload front to back; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : rest_(bytes) {}
  template <typename T>
  bool Read(T* out, size_t count = 1) {
    const size_t bytes = count * sizeof(T);
    if (count > rest_.size() / sizeof(T) || bytes > rest_.size()) return false;
    std::memcpy(out, rest_.data(), bytes);
    rest_.remove_prefix(bytes);
    return true;
  }
  bool ReadFloats(std::vector<float>* out, size_t count) {
    if (count > rest_.size() / sizeof(float)) return false;
    out->resize(count);
    return Read(out->data(), count);
  }
  bool ReadString(std::string* out) {
    uint32_t size = 0;
    if (!Read(&size) || size > kMaxLabelBytes || size > rest_.size()) return false;
    out->assign(rest_.data(), size);
    rest_.remove_prefix(size);
    return true;
  }
  bool done() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

void L2NormalizeRow(float* v, size_t d) {
  double sum = 0;
  for (size_t j = 0; j < d; ++j) sum += static_cast<double>(v[j]) * v[j];
  if (sum <= 0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(sum));
  for (size_t j = 0; j < d; ++j) v[j] *= inv;
}

}  // namespace

Result<TrainedHead> TrainedHead::FromParameters(HeadParameters p) {
  const auto d_in = static_cast<size_t>(p.input_dimension);
  const auto d_out = static_cast<size_t>(p.output_dimension);
  if (p.input_dimension < 1 || p.input_dimension > static_cast<int>(kMaxDimension) ||
      p.output_dimension < 0 || p.output_dimension > static_cast<int>(kMaxDimension)) {
    return Status::InvalidArgument("trained head: dimensions out of range");
  }
  if (p.a.size() != d_out * d_in || p.b.size() != d_out) {
    return Status::InvalidArgument("trained head: the projection is not " +
                                   std::to_string(d_out) + " x " + std::to_string(d_in));
  }
  const size_t classes = p.labels.size();
  if (p.classifier_w.size() != classes * d_in || p.classifier_b.size() != classes) {
    return Status::InvalidArgument("trained head: the classifier does not have " +
                                   std::to_string(classes) + " rows of " + std::to_string(d_in));
  }
  if (classes == 1 || classes > kMaxClasses) {
    return Status::InvalidArgument("trained head: a classifier needs 2 or more classes");
  }
  if (!AllFinite(p.a) || !AllFinite(p.b) || !AllFinite(p.classifier_w) ||
      !AllFinite(p.classifier_b)) {
    return Status::InvalidArgument("trained head: a weight is not finite");
  }
  return TrainedHead(std::make_shared<const HeadParameters>(std::move(p)));
}

std::string TrainedHead::Serialize() const {
  const HeadParameters& p = *params_;
  std::string payload;
  const uint32_t header[3] = {static_cast<uint32_t>(p.input_dimension),
                              static_cast<uint32_t>(p.output_dimension),
                              static_cast<uint32_t>(p.labels.size())};
  Append(&payload, header, 3);
  Append(&payload, p.a.data(), p.a.size());
  Append(&payload, p.b.data(), p.b.size());
  for (const std::string& label : p.labels) {
    const auto size = static_cast<uint32_t>(label.size());
    Append(&payload, &size, 1);
    payload += label;
  }
  Append(&payload, p.classifier_w.data(), p.classifier_w.size());
  Append(&payload, p.classifier_b.data(), p.classifier_b.size());
  return SealFile(kHeadMagic, payload);
}

Result<TrainedHead> TrainedHead::Parse(std::string_view bytes, const std::string& what) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string_view payload, UnsealFile(bytes, kHeadMagic, what));
  Reader in(payload);
  uint32_t header[3];
  HeadParameters p;
  bool ok = in.Read(header, 3) && header[0] <= kMaxDimension && header[1] <= kMaxDimension &&
            header[2] <= kMaxClasses;
  if (ok) {
    p.input_dimension = static_cast<int>(header[0]);
    p.output_dimension = static_cast<int>(header[1]);
    const size_t d_in = header[0], d_out = header[1], classes = header[2];
    ok = in.ReadFloats(&p.a, d_out * d_in) && in.ReadFloats(&p.b, d_out);
    p.labels.resize(classes);
    for (size_t c = 0; ok && c < classes; ++c) ok = in.ReadString(&p.labels[c]);
    ok = ok && in.ReadFloats(&p.classifier_w, classes * d_in) &&
         in.ReadFloats(&p.classifier_b, classes) && in.done();
  }
  if (!ok) return Status::DataLoss(what + " has an inconsistent size");
  Result<TrainedHead> head = FromParameters(std::move(p));
  if (!head.ok()) return Status::DataLoss(what + ": " + head.status().message());
  return head;
}

Result<TrainedHead> TrainedHead::Load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::NotFound("cannot open trained head " + file.string());
  std::string bytes(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) return Status::Internal("cannot read " + file.string());
  return Parse(bytes, "trained head " + file.string());
}

int TrainedHead::output_dimension() const {
  return projects() ? params_->output_dimension : params_->input_dimension;
}

void TrainedHead::Project(const float* in, size_t n, float* out) const {
  const HeadParameters& p = *params_;
  const auto d_in = static_cast<size_t>(p.input_dimension);
  if (n == 0) return;
  if (!projects()) {
    std::copy(in, in + n * d_in, out);
    return;
  }
  const auto d_out = static_cast<size_t>(p.output_dimension);
  // LinearTransform runs the product as one BLAS call for all n rows.
  faiss::LinearTransform transform(p.input_dimension, p.output_dimension, /*have_bias=*/true);
  transform.A = p.a;
  transform.b = p.b;
  transform.is_trained = true;
  transform.apply_noalloc(static_cast<faiss::Index::idx_t>(n), in, out);
  for (size_t i = 0; i < n; ++i) L2NormalizeRow(out + i * d_out, d_out);
}

std::optional<CategoryPrediction> TrainedHead::Classify(std::span<const float> base) const {
  const HeadParameters& p = *params_;
  const auto d_in = static_cast<size_t>(p.input_dimension);
  if (!has_classifier() || base.size() != d_in) return std::nullopt;
  std::vector<double> logits(p.labels.size());
  for (size_t c = 0; c < logits.size(); ++c) {
    double sum = p.classifier_b[c];
    const float* w = p.classifier_w.data() + c * d_in;
    for (size_t j = 0; j < d_in; ++j) sum += static_cast<double>(w[j]) * base[j];
    logits[c] = sum;
  }
  // Softmax, shifted by the largest logit so that exp cannot overflow.
  const size_t best = static_cast<size_t>(std::max_element(logits.begin(), logits.end()) -
                                          logits.begin());
  double total = 0;
  for (double z : logits) total += std::exp(z - logits[best]);
  return CategoryPrediction{p.labels[best], static_cast<float>(1.0 / total)};
}

}  // namespace pixseek
