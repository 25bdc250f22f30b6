// Parts of feature extraction that are learned from a collection when its
// database is built, rather than downloaded: the SIFT-VLAD codebook (runtime
// "sift-vlad") and PCA or PCA-whitening applied after any model. Both are
// stored as checksummed files in the database directory and applied
// identically at query time. This header is the applying side (src/embed);
// the learning is in src/train (pixseek/train.h). FAISS and OpenCV stay inside
// the .cc files.
#ifndef PIXSEEK_FEATURE_FIT_H_
#define PIXSEEK_FEATURE_FIT_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/embedder.h"
#include "pixseek/image.h"
#include "pixseek/status.h"

namespace pixseek {

// ---- SIFT-VLAD ------------------------------------------------------------

// Length of one SIFT descriptor.
inline constexpr int kSiftDimension = 128;

// True for runtimes whose "model file" is learned per collection and lives in
// the database directory (today only "sift-vlad").
bool LearnsPerCollection(const ModelCard& card);

// RootSIFT descriptors (SIFT, L1-normalised, square-rooted) of one image as
// the sift-vlad `card` says: grey, shrunk to fit input_width x input_height,
// at most card.max_keypoints of the strongest keypoints. Rows of 128 floats;
// empty when the image has no keypoints (a flat picture). InvalidArgument for
// an empty image; Internal for an OpenCV failure.
Result<std::vector<float>> RootSiftDescriptors(const ModelCard& card, const Image& image);

// A SIFT-VLAD codebook (TrainSiftVladCodebook learns one): clusters()
// centroids of kSiftDimension floats, row-major.
struct SiftVladCodebook {
  std::vector<float> centroids;

  int clusters() const { return static_cast<int>(centroids.size() / kSiftDimension); }
  // The bytes of its checksummed codebook file, which OpenEmbedder(card, file)
  // and OpenSiftVlad read.
  std::string Serialize() const;
};

// The embedder of a sift-vlad `card` over a codebook given as the bytes of
// its file (OpenEmbedder(card, file) reads the file and calls this). DataLoss
// naming `what` when the bytes are damaged.
Result<std::unique_ptr<Embedder>> OpenSiftVlad(const ModelCard& card, std::string_view codebook,
                                               const std::string& what);

// ---- Spatial verification -------------------------------------------------

// Local features of one image for geometric matching: RootSIFT descriptors
// (as RootSiftDescriptors computes them) with their keypoints' positions.
struct LocalFeatures {
  std::vector<float> points;       // x, y per keypoint, in the image's pixels (after shrinking)
  std::vector<float> descriptors;  // kSiftDimension floats per keypoint
  size_t size() const { return points.size() / 2; }
};

struct SpatialOptions {
  int max_side = 640;       // images are shrunk to fit a max_side square first
  int max_keypoints = 1000;  // the strongest keypoints kept
  float ratio = 0.8f;       // Lowe's ratio test on the two nearest descriptors
  float ransac_pixels = 8.0f;  // reprojection error of a RANSAC inlier
};

// RootSIFT keypoints of `image` (grey, shrunk to fit options.max_side). Empty
// for a flat picture. InvalidArgument for an empty image; Internal for an
// OpenCV failure.
Result<LocalFeatures> ExtractLocalFeatures(const Image& image, const SpatialOptions& options);

// How many of the ratio-test matches between `a` and `b` agree with one
// homography found by RANSAC (OpenCV findHomography): about 0-10 for
// unrelated pictures, tens to hundreds for views of the same object or
// scene. 0 when either has fewer than 4 keypoints or matches. Never fails
// (an OpenCV error counts as 0).
int CountInliers(const LocalFeatures& a, const LocalFeatures& b, const SpatialOptions& options);

// ---- PCA ------------------------------------------------------------------

struct PcaOptions {
  int dimension = 0;    // output dimension, 1..input dimension
  bool whiten = false;  // scale each component to unit variance
  // Whitening divides component i by sqrt((1 - s) * eigenvalue_i + s * mean
  // of the kept eigenvalues): 0 is plain whitening, 1 none. Shrinkage keeps
  // the noisy low-variance components of a small sample from being blown up.
  float shrinkage = 0.5f;
};

// What a PCA learned (TrainPca in pixseek/train.h computes it): y = A x + b.
struct PcaParameters {
  PcaOptions options;  // options.dimension is the output dimension
  int input_dimension = 0;
  uint64_t trained_on = 0;         // rows it was learned from
  std::vector<float> eigenvalues;  // of the kept components, largest first
  // output_dimension x input_dimension, row-major, whitening (if any)
  // folded into its rows.
  std::vector<float> a;
  std::vector<float> b;  // output_dimension
};

// A learned affine map y = A x + b followed by L2 normalisation. Cheap to
// copy (shares the immutable matrix).
// Thread-safety: Apply may be called concurrently.
class PcaTransform {
 public:
  // The transform of learned parameters. InvalidArgument when their sizes
  // do not agree.
  static Result<PcaTransform> FromParameters(PcaParameters parameters);
  // Reads a file written from Serialize(). DataLoss when it is damaged.
  static Result<PcaTransform> Load(const std::filesystem::path& file);
  static Result<PcaTransform> Parse(std::string_view bytes, const std::string& what);
  std::string Serialize() const;

  int input_dimension() const;
  int output_dimension() const;
  const PcaOptions& options() const;
  // The eigenvalues of the kept components, largest first.
  const std::vector<float>& eigenvalues() const;

  // out (n rows of output_dimension) = L2-normalised A x + b for the n rows
  // of input_dimension at `in`.
  void Apply(const float* in, size_t n, float* out) const;

  struct Impl;

 private:
  explicit PcaTransform(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace pixseek

#endif  // PIXSEEK_FEATURE_FIT_H_
