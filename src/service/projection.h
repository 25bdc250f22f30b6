// How a database turns base features (its network's output) into the
// vectors its index holds: the PCA learned when it was created, the head of
// a trained model, or neither. Base features are what the metadata store
// keeps and what training learns from; the projection is cheap enough to
// apply to all of them again when a database switches to a trained head.
#ifndef PIXSEEK_SERVICE_PROJECTION_H_
#define PIXSEEK_SERVICE_PROJECTION_H_

#include <algorithm>
#include <cstddef>
#include <optional>

#include "pixseek/feature_fit.h"
#include "pixseek/trained_head.h"

namespace pixseek {

// Immutable and cheap to copy; Apply may be called concurrently.
class FeatureProjection {
 public:
  // The identity on `dimension`-d base features.
  explicit FeatureProjection(int dimension) : input_dimension_(dimension) {}
  explicit FeatureProjection(PcaTransform pca)
      : input_dimension_(pca.input_dimension()), pca_(std::move(pca)) {}
  explicit FeatureProjection(TrainedHead head)
      : input_dimension_(head.input_dimension()), head_(std::move(head)) {}

  int input_dimension() const { return input_dimension_; }
  int output_dimension() const {
    if (pca_) return pca_->output_dimension();
    if (head_) return head_->output_dimension();
    return input_dimension_;
  }
  // The trained head, when there is one (it may also classify).
  const TrainedHead* head() const { return head_ ? &*head_ : nullptr; }

  // out: n rows of output_dimension() from the n rows of input_dimension() at in.
  void Apply(const float* in, size_t n, float* out) const {
    if (pca_) {
      pca_->Apply(in, n, out);
    } else if (head_) {
      head_->Project(in, n, out);
    } else {
      std::copy(in, in + n * static_cast<size_t>(input_dimension_), out);
    }
  }

 private:
  int input_dimension_ = 0;
  std::optional<PcaTransform> pca_;
  std::optional<TrainedHead> head_;
};

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_PROJECTION_H_
