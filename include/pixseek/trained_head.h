// A head learned by `pixseek train` on the features of a base model (the
// file of a model card with runtime "head"): a projection
// y = normalise(A x + b), absent when training kept the base features, and a
// linear classifier softmax(W x + c) that predicts a query's category. Both
// read the base features (the base model's L2-normalised output). Applying
// them needs no libtorch; learning them does (pixseek/train.h).
#ifndef PIXSEEK_TRAINED_HEAD_H_
#define PIXSEEK_TRAINED_HEAD_H_

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

struct HeadParameters {
  int input_dimension = 0;
  int output_dimension = 0;  // 0 = no projection: the base features are kept
  std::vector<float> a;      // output_dimension x input_dimension, row-major
  std::vector<float> b;      // output_dimension
  std::vector<std::string> labels;  // the classifier's classes; empty = none
  std::vector<float> classifier_w;  // labels.size() x input_dimension
  std::vector<float> classifier_b;  // labels.size()
};

// A predicted category and the probability the classifier (or the vote of
// the nearest neighbours) gives it.
struct CategoryPrediction {
  std::string label;
  float confidence = 0;
};

// Immutable and cheap to copy. Thread-safety: every method may be called
// concurrently.
class TrainedHead {
 public:
  // InvalidArgument when the sizes do not agree or a value is not finite.
  static Result<TrainedHead> FromParameters(HeadParameters parameters);
  // The bytes of Serialize(); DataLoss naming `what` when they are damaged.
  static Result<TrainedHead> Parse(std::string_view bytes, const std::string& what);
  static Result<TrainedHead> Load(const std::filesystem::path& file);
  // A checksummed file (magic "PXHEAD01", the parameters, SHA-256).
  std::string Serialize() const;

  const HeadParameters& parameters() const { return *params_; }
  int input_dimension() const { return params_->input_dimension; }
  // The length of Project's rows: the projection's, or the input's.
  int output_dimension() const;
  bool projects() const { return params_->output_dimension > 0; }
  bool has_classifier() const { return !params_->labels.empty(); }
  const std::vector<std::string>& labels() const { return params_->labels; }

  // out (n rows of output_dimension()) = normalise(A x + b) of the n rows of
  // input_dimension at `in`; a copy when there is no projection.
  void Project(const float* in, size_t n, float* out) const;
  // The most probable class of one base feature; nullopt without a
  // classifier.
  std::optional<CategoryPrediction> Classify(std::span<const float> base) const;

 private:
  explicit TrainedHead(std::shared_ptr<const HeadParameters> p) : params_(std::move(p)) {}
  std::shared_ptr<const HeadParameters> params_;
};

}  // namespace pixseek

#endif  // PIXSEEK_TRAINED_HEAD_H_
