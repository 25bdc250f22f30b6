// The metric-learning losses of the training plugin (pixseek_train.so), in
// libtorch, shared by the head trainer and the backbone trainer.
//
// Notation: z holds N rows, each L2-normalised (the outputs being trained,
// with gradient); y their N labels (int64). d(a, b) = ||a - b|| is the
// Euclidean distance (not squared). A "relevant" row has the query's label,
// an "irrelevant" one another label. Pairs are formed between the batch
// rows and (batch ∪ memory); a row is never paired with itself. Memory rows
// (a CrossBatchMemory's, from earlier batches) are constants: no gradient
// flows into them.
//
//   TripletLoss         [ d(q, q+) - d(q, q-) + margin ]_+ for every query q
//                       of the batch, relevant q+ and irrelevant q-, averaged
//                       over the violating triplets (value > 0) of the batch;
//                       0 when none violates.
//   TripletPerQueryLoss (1/|Q|) sum_q (1/|T_q|) sum_{(q+,q-) in T_q} [...]_+
//                       with T_q the violating triplets of query q and Q the
//                       batch rows with at least one valid triplet (a
//                       relevant and an irrelevant row exist); a query with
//                       no violating triplet adds 0 to the sum (but counts in
//                       |Q|). 0 when Q is empty.
//   ContrastiveLoss     (1/N) sum_i [ sum_{j != i, y_j = y_i} (1 - z_i.z_j)
//                                   + sum_{j: y_j != y_i} [z_i.z_j - beta]_+ ]
//                       with j over batch ∪ memory and beta the margin
//                       (default 0.5).
//   KoLeoLoss           -(1/N) sum_i log(rho_i + eps),
//                       rho_i = min_{j != i} ||z_i - z_j|| within the batch.
//
// The total loss of a batch is L = L_metric + lambda * L_KoLeo (BatchLoss).
// With cross-batch memory (XBM), the memory holds the last M rows and labels
// of earlier batches; a batch's loss also takes the pairs between the batch
// and the memory, and the batch is enqueued after the optimiser step.
//
// Nothing here is thread-safe beyond what libtorch gives; libtorch throws
// c10::Error on misuse (the plugin's entry points catch it).
#ifndef PIXSEEK_TRAIN_TORCH_LOSSES_H_
#define PIXSEEK_TRAIN_TORCH_LOSSES_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "pixseek/train.h"

namespace pixseek::train {

// z: N x D rows (L2-normalised, with grad); y: N labels (int64).
// memory_z / memory_y: earlier batches' rows (detached) and labels; either
// may be an undefined or empty tensor (no memory).
torch::Tensor TripletLoss(const torch::Tensor& z, const torch::Tensor& y, double margin,
                          const torch::Tensor& memory_z = {}, const torch::Tensor& memory_y = {});
torch::Tensor TripletPerQueryLoss(const torch::Tensor& z, const torch::Tensor& y, double margin,
                                  const torch::Tensor& memory_z = {},
                                  const torch::Tensor& memory_y = {});
// margin = beta.
torch::Tensor ContrastiveLoss(const torch::Tensor& z, const torch::Tensor& y, double margin,
                              const torch::Tensor& memory_z = {},
                              const torch::Tensor& memory_y = {});
// Needs N >= 2 (rho is undefined for one row); 0 for N < 2.
torch::Tensor KoLeoLoss(const torch::Tensor& z, double eps = 1e-8);

// A FIFO of the last `capacity` rows and labels enqueued (XBM). Enqueuing
// more than capacity rows at once keeps the last capacity of them. Not
// thread-safe; owns its tensors.
class CrossBatchMemory {
 public:
  CrossBatchMemory(int64_t capacity, int64_t dimension);
  // Stores z.detach() (N x dimension, float) and y (N, int64).
  void Enqueue(const torch::Tensor& z, const torch::Tensor& y);
  // The rows held now, oldest first (empty tensors when none); they may be
  // views of the buffer, valid until the next Enqueue.
  torch::Tensor z() const;
  torch::Tensor y() const;
  int64_t size() const { return size_; }
  int64_t capacity() const { return capacity_; }

 private:
  int64_t capacity_;
  int64_t dimension_;
  torch::Tensor z_;     // capacity x dimension ring buffer
  torch::Tensor y_;     // capacity
  int64_t next_ = 0;    // slot the next row goes to
  int64_t size_ = 0;    // rows held, <= capacity
};

// The loss of options (options.loss with options.margin, or
// DefaultMargin(options.loss) when it is 0, plus options.koleo * KoLeo) for
// one batch, with the pairs against `memory` when it is not null.
torch::Tensor BatchLoss(const MetricTrainOptions& options, const torch::Tensor& z,
                        const torch::Tensor& y, const CrossBatchMemory* memory);

// Leave-one-out mAP among the rows of z (N x D, float; ranked by inner
// product, i.e. by distance for normalised rows; exact, relevant = same
// label), computed in chunks of queries so that memory stays O(chunk x N).
// Queries with no other relevant row are left out; 0 when none is left.
double LeaveOneOutMap(const torch::Tensor& z, const torch::Tensor& y);
// The same per class: each label's mean AP over its queries.
std::map<int64_t, double> LeaveOneOutClassMaps(const torch::Tensor& z, const torch::Tensor& y);

// The P x K batches of one epoch: each batch takes p classes (of those with
// at least 2 rows; the others never anchor) and k rows of each (sampled
// without replacement while a class has rows left this epoch, then with).
// Deterministic for the same labels and rng state. Every row of an anchoring
// class is used about once per epoch.
std::vector<std::vector<int64_t>> PkBatches(const std::vector<int32_t>& labels, int p, int k,
                                            std::mt19937& rng);

}  // namespace pixseek::train

#endif  // PIXSEEK_TRAIN_TORCH_LOSSES_H_
