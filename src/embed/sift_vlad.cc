// SIFT-VLAD: RootSIFT descriptors (OpenCV SIFT), the codebook file, and the
// embedder that aggregates descriptors with VLAD over the codebook (learned
// by k-means in src/train). OpenCV and FAISS stay inside this file; their
// exceptions become Status.
//
// Vector of one image: each descriptor's residual to its nearest centroid is
// summed per centroid (k blocks of 128), each block optionally L2-normalised
// ("intra-normalisation", Arandjelovic & Zisserman 2013), then signed square
// root (power normalisation) and L2 normalisation of the whole vector.
#include "embed/sift_vlad.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include <faiss/IndexFlat.h>
#include <opencv2/core.hpp>
#include <opencv2/features2d.hpp>
#include <opencv2/imgproc.hpp>

#include "embed/preprocess.h"
#include "embed/sealed_file.h"
#include "pixseek/feature_fit.h"
#include "core/omp_threads.h"

namespace pixseek {
namespace {

constexpr std::string_view kCodebookMagic = "PXVLAD01";


int Clusters(const ModelCard& card) { return card.dimension / kSiftDimension; }

std::string CvError(const cv::Exception& e) { return e.err.empty() ? e.msg : e.err; }

// Descriptors of `image` into `out` (rows of 128). May throw cv::Exception.
void ExtractRootSift(const ModelCard& card, const Image& image, std::vector<float>* out) {
  cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
  cv::Mat grey;
  cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
  // Shrink to fit the card's box: SIFT's cost grows with the pixels while
  // the aggregated vector gains little from detail beyond ~512 pixels.
  const double scale = std::min({1.0, static_cast<double>(card.preprocess.input_width) / image.width,
                                 static_cast<double>(card.preprocess.input_height) / image.height});
  if (scale < 1.0) {
    cv::Mat small;
    cv::resize(grey, small,
               cv::Size(std::max(1, static_cast<int>(std::lround(image.width * scale))),
                        std::max(1, static_cast<int>(std::lround(image.height * scale)))),
               0, 0, cv::INTER_AREA);
    grey = small;
  }
  // nfeatures keeps the strongest keypoints by response.
  cv::Ptr<cv::SIFT> sift = cv::SIFT::create(card.sift_vlad.max_keypoints);
  std::vector<cv::KeyPoint> keypoints;
  cv::Mat desc;
  sift->detectAndCompute(grey, cv::noArray(), keypoints, desc);
  out->clear();
  if (desc.empty()) return;
  desc.convertTo(desc, CV_32F);
  // nfeatures keeps ties at the cut-off: enforce the cap, strongest first
  // (stable, so the choice is repeatable).
  if (desc.rows > card.sift_vlad.max_keypoints) {
    std::vector<int> order(static_cast<size_t>(desc.rows));
    for (int i = 0; i < desc.rows; ++i) order[static_cast<size_t>(i)] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return keypoints[static_cast<size_t>(a)].response > keypoints[static_cast<size_t>(b)].response;
    });
    cv::Mat kept(card.sift_vlad.max_keypoints, desc.cols, CV_32F);
    for (int i = 0; i < card.sift_vlad.max_keypoints; ++i) desc.row(order[static_cast<size_t>(i)]).copyTo(kept.row(i));
    desc = kept;
  }
  // RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then square
  // root, so that Euclidean distance compares the Hellinger kernel.
  for (int r = 0; r < desc.rows; ++r) {
    cv::Mat row = desc.row(r);
    cv::normalize(row, row, 1.0, 0.0, cv::NORM_L1);
    cv::sqrt(row, row);
  }
  const float* p = desc.ptr<float>(0);
  out->assign(p, p + static_cast<size_t>(desc.rows) * kSiftDimension);
}

// An Embedder computing VLAD vectors over a fixed codebook.
//
// Thread-safety: Embed may be called from one thread at a time (the Embedder
// contract); it processes the images of a batch in parallel itself. Owns the
// codebook's FAISS index, whose search is const.
class SiftVladEmbedder final : public Embedder {
 public:
  SiftVladEmbedder(ModelCard card, std::vector<float> centroids)
      : card_(std::move(card)), quantizer_(kSiftDimension) {
    quantizer_.add(Clusters(card_), centroids.data());
    centroids_ = std::move(centroids);
  }

  const ModelCard& card() const override { return card_; }

  Status Embed(std::span<const Image* const> images, float* out) override {
    if (images.empty()) return Status::Ok();
    if (out == nullptr) return Status::InvalidArgument("Embed: output buffer is null");
    for (size_t i = 0; i < images.size(); ++i) {
      PIXSEEK_RETURN_IF_ERROR(CheckEmbedImage(images[i], i));
    }
    std::mutex mu;
    Status first_error;
    try {
      // One image per task: SIFT dominates and images are independent, so
      // this scales with the cores, and each vector is computed the same way
      // whatever the batch (identical output across batch sizes).
      cv::parallel_for_(cv::Range(0, static_cast<int>(images.size())), [&](const cv::Range& r) {
        ScopedOmpThreads one(1);
        std::vector<float> desc;
        for (int i = r.start; i < r.end; ++i) {
          Status s = EmbedOne(*images[i], &desc, out + static_cast<size_t>(i) * card_.dimension);
          if (!s.ok()) {
            std::lock_guard<std::mutex> lock(mu);
            if (first_error.ok()) first_error = s;
          }
        }
      });
    } catch (const cv::Exception& e) {
      return Status::Internal("sift-vlad: " + CvError(e));
    }
    return first_error;
  }

 private:
  Status EmbedOne(const Image& image, std::vector<float>* desc, float* out) const {
    try {
      ExtractRootSift(card_, image, desc);
    } catch (const cv::Exception& e) {
      return Status::Internal("sift-vlad: SIFT failed: " + CvError(e));
    } catch (const std::exception& e) {
      return Status::Internal(std::string("sift-vlad: SIFT failed: ") + e.what());
    }
    const size_t dim = static_cast<size_t>(card_.dimension);
    std::fill(out, out + dim, 0.0f);
    const size_t n = desc->size() / kSiftDimension;
    if (n == 0) {
      // No keypoints (a flat or tiny picture): the uniform unit vector, so
      // that the index (which stores unit vectors) takes it, such pictures
      // match each other, and they match textured ones only weakly.
      std::fill(out, out + dim, static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim))));
      return Status::Ok();
    }
    std::vector<faiss::Index::idx_t> labels(n);
    std::vector<float> distances(n);
    try {
      quantizer_.search(static_cast<faiss::Index::idx_t>(n), desc->data(), 1, distances.data(),
                        labels.data());
    } catch (const std::exception& e) {
      return Status::Internal(std::string("sift-vlad: codebook search (faiss): ") + e.what());
    }
    for (size_t i = 0; i < n; ++i) {
      const faiss::Index::idx_t c = labels[i];
      if (c < 0) continue;
      const float* d = desc->data() + i * kSiftDimension;
      const float* centre = centroids_.data() + static_cast<size_t>(c) * kSiftDimension;
      float* block = out + static_cast<size_t>(c) * kSiftDimension;
      for (int j = 0; j < kSiftDimension; ++j) block[j] += d[j] - centre[j];
    }
    if (card_.sift_vlad.intra_normalize) {
      for (size_t b = 0; b < dim; b += kSiftDimension) L2Normalize(out + b, kSiftDimension);
    }
    for (size_t j = 0; j < dim; ++j) {
      out[j] = std::copysign(std::sqrt(std::fabs(out[j])), out[j]);
    }
    L2Normalize(out, dim);
    return Status::Ok();
  }

  static void L2Normalize(float* v, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += static_cast<double>(v[i]) * v[i];
    if (sum <= 0) return;
    const float inv = static_cast<float>(1.0 / std::sqrt(sum));
    for (size_t i = 0; i < n; ++i) v[i] *= inv;
  }

  ModelCard card_;
  std::vector<float> centroids_;
  faiss::IndexFlatL2 quantizer_;
};

Result<std::string> ReadWholeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path.string());
  std::string bytes(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) return Status::Internal("cannot read " + path.string());
  return bytes;
}

}  // namespace

bool LearnsPerCollection(const ModelCard& card) { return card.runtime == Runtime::kSiftVlad; }

Result<std::vector<float>> RootSiftDescriptors(const ModelCard& card, const Image& image) {
  PIXSEEK_RETURN_IF_ERROR(CheckEmbedImage(&image, 0));
  std::vector<float> out;
  try {
    ExtractRootSift(card, image, &out);
  } catch (const cv::Exception& e) {
    return Status::Internal("sift-vlad: SIFT failed: " + CvError(e));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("sift-vlad: SIFT failed: ") + e.what());
  }
  return out;
}

std::string SiftVladCodebook::Serialize() const {
  std::string payload;
  const uint32_t header[2] = {static_cast<uint32_t>(clusters()),
                              static_cast<uint32_t>(kSiftDimension)};
  payload.append(reinterpret_cast<const char*>(header), sizeof header);
  payload.append(reinterpret_cast<const char*>(centroids.data()),
                 static_cast<size_t>(clusters()) * kSiftDimension * sizeof(float));
  return SealFile(kCodebookMagic, payload);
}

Result<std::unique_ptr<Embedder>> OpenSiftVladEmbedder(
    const ModelCard& card, const std::filesystem::path& codebook_file) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(codebook_file));
  return OpenSiftVlad(card, bytes, "SIFT-VLAD codebook " + codebook_file.string());
}

Result<std::unique_ptr<Embedder>> OpenSiftVlad(const ModelCard& card, std::string_view codebook,
                                               const std::string& what) {
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  if (!LearnsPerCollection(card)) {
    return Status::InvalidArgument("model card: runtime " + std::string(ToString(card.runtime)) +
                                   " has no codebook");
  }
  PIXSEEK_ASSIGN_OR_RETURN(std::string_view payload, UnsealFile(codebook, kCodebookMagic, what));
  uint32_t header[2];
  if (payload.size() < sizeof header) return Status::DataLoss(what + " is truncated");
  std::memcpy(header, payload.data(), sizeof header);
  const size_t floats = static_cast<size_t>(header[0]) * header[1];
  if (header[1] != static_cast<uint32_t>(kSiftDimension) ||
      payload.size() != sizeof header + floats * sizeof(float)) {
    return Status::DataLoss(what + " has an inconsistent size");
  }
  if (static_cast<int>(header[0]) != Clusters(card)) {
    return Status::InvalidArgument(what + " has " + std::to_string(header[0]) +
                                   " centroids but the card's dimension " +
                                   std::to_string(card.dimension) + " needs " +
                                   std::to_string(Clusters(card)));
  }
  std::vector<float> centroids(floats);
  std::memcpy(centroids.data(), payload.data() + sizeof header, floats * sizeof(float));
  if (!std::all_of(centroids.begin(), centroids.end(), [](float v) { return std::isfinite(v); })) {
    return Status::DataLoss(what + " holds a non-finite centroid");
  }
  try {
    return std::unique_ptr<Embedder>(std::make_unique<SiftVladEmbedder>(card, std::move(centroids)));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("sift-vlad: ") + e.what());
  }
}

}  // namespace pixseek
