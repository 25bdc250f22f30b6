// PcaTransform (learned on a collection by TrainPca, src/train) and its
// checksummed file; the service layer applies it after the network
// (src/service/projection.h). FAISS (its LinearTransform applies the map)
// stays inside this file.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <faiss/VectorTransform.h>

#include "embed/sealed_file.h"
#include "pixseek/feature_fit.h"

namespace pixseek {

constexpr std::string_view kPcaMagic = "PXPCA001";

struct PcaTransform::Impl {
  PcaOptions options;
  uint64_t trained_on = 0;       // rows the PCA was learned from
  std::vector<float> eigenvalues;  // of the kept components
  // y = A x + b, A row-major output_dimension x input_dimension, whitening
  // (if any) folded into its rows.
  faiss::LinearTransform transform;

  Impl(int d_in, int d_out) : transform(d_in, d_out, /*have_bias=*/true) {}
};

namespace {

void L2NormalizeRows(float* x, size_t n, size_t d) {
  for (size_t i = 0; i < n; ++i) {
    float* v = x + i * d;
    double sum = 0;
    for (size_t j = 0; j < d; ++j) sum += static_cast<double>(v[j]) * v[j];
    if (sum <= 0) continue;
    const float inv = static_cast<float>(1.0 / std::sqrt(sum));
    for (size_t j = 0; j < d; ++j) v[j] *= inv;
  }
}

template <typename T>
void Append(std::string* out, const T* data, size_t count) {
  out->append(reinterpret_cast<const char*>(data), count * sizeof(T));
}

}  // namespace

Result<PcaTransform> PcaTransform::FromParameters(PcaParameters p) {
  const int d_in = p.input_dimension;
  const int d_out = p.options.dimension;
  if (d_in < 1 || d_out < 1 || d_out > d_in ||
      p.a.size() != static_cast<size_t>(d_out) * static_cast<size_t>(d_in) ||
      p.b.size() != static_cast<size_t>(d_out) ||
      p.eigenvalues.size() != static_cast<size_t>(d_out)) {
    return Status::InvalidArgument("PCA: parameters of inconsistent sizes");
  }
  try {
    auto impl = std::make_shared<Impl>(d_in, d_out);
    impl->options = p.options;
    impl->trained_on = p.trained_on;
    impl->eigenvalues = std::move(p.eigenvalues);
    impl->transform.A = std::move(p.a);
    impl->transform.b = std::move(p.b);
    impl->transform.is_trained = true;
    return PcaTransform(std::move(impl));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("PCA: ") + e.what());
  }
}

std::string PcaTransform::Serialize() const {
  const Impl& m = *impl_;
  std::string payload;
  const uint32_t header[3] = {static_cast<uint32_t>(input_dimension()),
                              static_cast<uint32_t>(output_dimension()),
                              m.options.whiten ? 1u : 0u};
  Append(&payload, header, 3);
  Append(&payload, &m.options.shrinkage, 1);
  Append(&payload, &m.trained_on, 1);
  Append(&payload, m.eigenvalues.data(), m.eigenvalues.size());
  Append(&payload, m.transform.A.data(), m.transform.A.size());
  Append(&payload, m.transform.b.data(), m.transform.b.size());
  return SealFile(kPcaMagic, payload);
}

Result<PcaTransform> PcaTransform::Parse(std::string_view bytes, const std::string& what) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string_view p, UnsealFile(bytes, kPcaMagic, what));
  uint32_t header[3];
  float shrinkage = 0;
  uint64_t trained_on = 0;
  constexpr size_t kFixed = sizeof header + sizeof shrinkage + sizeof trained_on;
  if (p.size() < kFixed) return Status::DataLoss(what + " is truncated");
  std::memcpy(header, p.data(), sizeof header);
  std::memcpy(&shrinkage, p.data() + sizeof header, sizeof shrinkage);
  std::memcpy(&trained_on, p.data() + sizeof header + sizeof shrinkage, sizeof trained_on);
  const uint64_t d_in = header[0], d_out = header[1];
  if (d_in < 1 || d_out < 1 || d_out > d_in || d_in > (1u << 20) ||
      p.size() != kFixed + (d_out + d_out * d_in + d_out) * sizeof(float)) {
    return Status::DataLoss(what + " has an inconsistent size");
  }
  PcaParameters params;
  params.options.dimension = static_cast<int>(d_out);
  params.options.whiten = header[2] != 0;
  params.options.shrinkage = shrinkage;
  params.input_dimension = static_cast<int>(d_in);
  params.trained_on = trained_on;
  const char* at = p.data() + kFixed;
  auto take = [&](std::vector<float>* v, size_t count) {
    v->resize(count);
    std::memcpy(v->data(), at, count * sizeof(float));
    at += count * sizeof(float);
  };
  try {
    take(&params.eigenvalues, d_out);
    take(&params.a, d_out * d_in);
    take(&params.b, d_out);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("PCA: ") + e.what());
  }
  auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  if (!finite(params.a) || !finite(params.b)) {
    return Status::DataLoss(what + " holds a non-finite value");
  }
  return FromParameters(std::move(params));
}

Result<PcaTransform> PcaTransform::Load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::NotFound("cannot open PCA file " + file.string());
  std::string bytes(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) return Status::Internal("cannot read " + file.string());
  return Parse(bytes, "PCA file " + file.string());
}

int PcaTransform::input_dimension() const { return impl_->transform.d_in; }
int PcaTransform::output_dimension() const { return impl_->transform.d_out; }
const PcaOptions& PcaTransform::options() const { return impl_->options; }
const std::vector<float>& PcaTransform::eigenvalues() const { return impl_->eigenvalues; }

void PcaTransform::Apply(const float* in, size_t n, float* out) const {
  if (n == 0) return;
  impl_->transform.apply_noalloc(static_cast<faiss::Index::idx_t>(n), in, out);
  L2NormalizeRows(out, n, static_cast<size_t>(output_dimension()));
}

}  // namespace pixseek
