// The losses of losses.h. Triplet losses never build the N x A x A triplet
// tensor with gradient: which triplets violate the margin is decided without
// gradient (in chunks of queries, so memory stays bounded with a large
// cross-batch memory), and the loss is then the equal weighted sum of the
// pair distances, sum_(j,k) [d_qj - d_qk + m] = sum_j a_qj d_qj - sum_k b_qk d_qk
// + m |T_q|, whose autograd graph is only N x A.
#include "train/torch/losses.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <numeric>

#include "train/metric_learning.h"

namespace pixseek::train {
namespace {

// Elements of the largest temporary tensor (triplet chunks, mAP scores).
constexpr int64_t kMaxChunkElements = int64_t{1} << 23;

bool HasRows(const torch::Tensor& t) { return t.defined() && t.numel() > 0; }

// The rows a batch is paired with (the batch, then the memory), their
// labels, and which pairs are relevant / irrelevant for each batch row.
struct Pairs {
  torch::Tensor others;    // A x D
  torch::Tensor positive;  // N x A bool: same label, not the row itself
  torch::Tensor negative;  // N x A bool: another label
};

Pairs MakePairs(const torch::Tensor& z, const torch::Tensor& y, const torch::Tensor& memory_z,
                const torch::Tensor& memory_y) {
  TORCH_CHECK(z.dim() == 2, "z must be N x D");
  TORCH_CHECK(y.numel() == z.size(0), "y must have one label per row of z");
  const torch::Tensor labels = y.reshape(-1).to(torch::kLong);
  Pairs pairs;
  torch::Tensor all_labels = labels;
  pairs.others = z;
  if (HasRows(memory_z)) {
    TORCH_CHECK(memory_z.dim() == 2 && memory_z.size(1) == z.size(1),
                "memory rows must have z's dimension");
    TORCH_CHECK(memory_y.defined() && memory_y.numel() == memory_z.size(0),
                "memory_y must have one label per memory row");
    pairs.others = torch::cat({z, memory_z.detach().to(z.dtype())});
    all_labels = torch::cat({labels, memory_y.reshape(-1).to(torch::kLong)});
  }
  const int64_t n = z.size(0);
  const torch::Tensor same = labels.unsqueeze(1).eq(all_labels.unsqueeze(0));
  const torch::Tensor self =
      torch::eye(n, pairs.others.size(0), torch::TensorOptions().dtype(torch::kBool));
  pairs.positive = same.logical_and(self.logical_not());
  pairs.negative = same.logical_not();
  return pairs;
}

// Euclidean distances (N x A) between the rows of a and b. Clamped before
// the square root: the gradient of sqrt at 0 is infinite, and 0 * inf on a
// masked-out self pair would be NaN.
torch::Tensor Distances(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor squared = a.pow(2).sum(1, true) + b.pow(2).sum(1).unsqueeze(0) -
                                2 * a.matmul(b.t());
  return squared.clamp_min(1e-12).sqrt();
}

// A zero that is part of z's graph, so that backward() works on it.
torch::Tensor Zero(const torch::Tensor& z) { return (z * 0).sum(); }

// Counts of violating triplets, decided without gradient: for query q,
// as_positive[q][j] = #k with (j, k) violating, as_negative[q][k] = #j,
// per_query[q] = |T_q|.
struct Violations {
  torch::Tensor as_positive, as_negative, per_query;
};

Violations CountViolations(const torch::Tensor& distances, const Pairs& pairs, double margin) {
  torch::NoGradGuard no_grad;
  const torch::Tensor d = distances.detach();
  const int64_t n = d.size(0), a = d.size(1);
  Violations v{torch::zeros_like(d), torch::zeros_like(d), torch::zeros({n}, d.options())};
  // Only the relevant columns can be q+: each query's positives first
  // (padded to the most any query has), so a chunk is c x P x A rather than
  // c x A x A (with a 1024-row memory, 10x fewer elements).
  const int64_t most = pairs.positive.sum(1).max().item<int64_t>();
  if (most == 0) return v;
  const torch::Tensor order = std::get<1>(
      pairs.positive.to(torch::kByte).sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
  const torch::Tensor positive_index = order.slice(1, 0, most);               // N x P
  const torch::Tensor positive_valid = pairs.positive.gather(1, positive_index);  // N x P
  const torch::Tensor positive_d = d.gather(1, positive_index);                  // N x P
  const int64_t chunk = std::max<int64_t>(1, kMaxChunkElements / (most * a));
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t end = std::min(n, start + chunk);
    const torch::Tensor violating =
        (positive_d.slice(0, start, end).unsqueeze(2) - d.slice(0, start, end).unsqueeze(1) +
         margin)
            .gt(0)
            .logical_and_(positive_valid.slice(0, start, end).unsqueeze(2))
            .logical_and_(pairs.negative.slice(0, start, end).unsqueeze(1))
            .to(d.dtype());  // c x P x A
    v.as_positive.slice(0, start, end)
        .scatter_add_(1, positive_index.slice(0, start, end), violating.sum(2));
    v.as_negative.slice(0, start, end).copy_(violating.sum(1));
    v.per_query.slice(0, start, end).copy_(violating.sum({1, 2}));
  }
  return v;
}

// sum over q's violating triplets of d_qj - d_qk + margin, per query (N).
torch::Tensor ViolationSums(const torch::Tensor& distances, const Violations& v, double margin) {
  return (v.as_positive * distances).sum(1) - (v.as_negative * distances).sum(1) +
         margin * v.per_query;
}

// Fisher-Yates with rng() % n: unlike std::shuffle, the same on every
// standard library.
template <typename T>
void Shuffle(std::vector<T>& items, std::mt19937& rng) {
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng() % i]);
}

// Fills `chunk` up to k rows from `rows` (a class): rows not yet in it
// first, then any (with replacement) when the class is smaller than k.
void TopUp(std::vector<int64_t>& chunk, const std::vector<int64_t>& rows, size_t k,
           std::mt19937& rng) {
  std::vector<int64_t> unused;
  for (int64_t row : rows) {
    if (std::find(chunk.begin(), chunk.end(), row) == chunk.end()) unused.push_back(row);
  }
  Shuffle(unused, rng);
  for (size_t i = 0; i < unused.size() && chunk.size() < k; ++i) chunk.push_back(unused[i]);
  while (chunk.size() < k) chunk.push_back(rows[rng() % rows.size()]);
}

// m distinct positions of `weights`, drawn with probability proportional
// to the weights (all positive).
std::vector<size_t> WeightedSample(std::vector<int64_t> weights, size_t m, std::mt19937& rng) {
  std::vector<size_t> chosen;
  for (size_t drawn = 0; drawn < m; ++drawn) {
    const int64_t total = std::accumulate(weights.begin(), weights.end(), int64_t{0});
    if (total <= 0) break;
    int64_t r = static_cast<int64_t>(rng() % static_cast<uint64_t>(total));
    size_t i = 0;
    while (r >= weights[i]) r -= weights[i++];
    chosen.push_back(i);
    weights[i] = 0;
  }
  return chosen;
}

}  // namespace

torch::Tensor TripletLoss(const torch::Tensor& z, const torch::Tensor& y, double margin,
                          const torch::Tensor& memory_z, const torch::Tensor& memory_y) {
  const Pairs pairs = MakePairs(z, y, memory_z, memory_y);
  const torch::Tensor d = Distances(z, pairs.others);
  const Violations v = CountViolations(d, pairs, margin);
  const double total = v.per_query.sum().item<double>();
  if (total == 0) return Zero(z);
  return ViolationSums(d, v, margin).sum() / total;
}

torch::Tensor TripletPerQueryLoss(const torch::Tensor& z, const torch::Tensor& y, double margin,
                                  const torch::Tensor& memory_z, const torch::Tensor& memory_y) {
  const Pairs pairs = MakePairs(z, y, memory_z, memory_y);
  const torch::Tensor d = Distances(z, pairs.others);
  const Violations v = CountViolations(d, pairs, margin);
  // Q: the queries with a valid triplet, violating or not.
  const double queries = pairs.positive.any(1).logical_and(pairs.negative.any(1)).sum().item<double>();
  if (queries == 0) return Zero(z);
  // A query without violations has a zero sum; the clamp only avoids 0 / 0.
  return (ViolationSums(d, v, margin) / v.per_query.clamp_min(1)).sum() / queries;
}

torch::Tensor ContrastiveLoss(const torch::Tensor& z, const torch::Tensor& y, double margin,
                              const torch::Tensor& memory_z, const torch::Tensor& memory_y) {
  const Pairs pairs = MakePairs(z, y, memory_z, memory_y);
  const torch::Tensor s = z.matmul(pairs.others.t());
  const torch::Tensor positive = ((1 - s) * pairs.positive.to(s.dtype())).sum();
  const torch::Tensor negative = ((s - margin).relu() * pairs.negative.to(s.dtype())).sum();
  return (positive + negative) / static_cast<double>(z.size(0));
}

torch::Tensor KoLeoLoss(const torch::Tensor& z, double eps) {
  TORCH_CHECK(z.dim() == 2, "z must be N x D");
  const int64_t n = z.size(0);
  if (n < 2) return Zero(z);
  const torch::Tensor self = torch::eye(n, torch::TensorOptions().dtype(torch::kBool));
  const torch::Tensor d =
      Distances(z, z).masked_fill(self, std::numeric_limits<double>::infinity());
  const torch::Tensor rho = std::get<0>(d.min(1));
  return -(rho + eps).log().mean();
}

CrossBatchMemory::CrossBatchMemory(int64_t capacity, int64_t dimension)
    : capacity_(std::max<int64_t>(0, capacity)), dimension_(dimension) {}

void CrossBatchMemory::Enqueue(const torch::Tensor& z, const torch::Tensor& y) {
  if (capacity_ == 0 || z.size(0) == 0) return;
  TORCH_CHECK(z.dim() == 2 && z.size(1) == dimension_, "memory rows must be N x dimension");
  TORCH_CHECK(y.numel() == z.size(0), "one label per memory row");
  torch::NoGradGuard no_grad;
  torch::Tensor rows = z.detach();
  torch::Tensor labels = y.reshape(-1).to(torch::kLong);
  if (rows.size(0) > capacity_) {  // only the last capacity rows would stay
    rows = rows.slice(0, rows.size(0) - capacity_);
    labels = labels.slice(0, labels.size(0) - capacity_);
  }
  if (!z_.defined()) {
    z_ = torch::empty({capacity_, dimension_}, rows.options());
    y_ = torch::empty({capacity_}, labels.options());
  }
  const int64_t n = rows.size(0);
  const int64_t first = std::min(n, capacity_ - next_);  // up to the end of the ring
  z_.slice(0, next_, next_ + first).copy_(rows.slice(0, 0, first));
  y_.slice(0, next_, next_ + first).copy_(labels.slice(0, 0, first));
  if (first < n) {  // wraps around
    z_.slice(0, 0, n - first).copy_(rows.slice(0, first));
    y_.slice(0, 0, n - first).copy_(labels.slice(0, first));
  }
  next_ = (next_ + n) % capacity_;
  size_ = std::min(capacity_, size_ + n);
}

torch::Tensor CrossBatchMemory::z() const {
  if (size_ == 0) return torch::empty({0, dimension_});
  if (size_ < capacity_) return z_.slice(0, 0, size_);
  return torch::cat({z_.slice(0, next_), z_.slice(0, 0, next_)});
}

torch::Tensor CrossBatchMemory::y() const {
  if (size_ == 0) return torch::empty({0}, torch::kLong);
  if (size_ < capacity_) return y_.slice(0, 0, size_);
  return torch::cat({y_.slice(0, next_), y_.slice(0, 0, next_)});
}

torch::Tensor BatchLoss(const MetricTrainOptions& options, const torch::Tensor& z,
                        const torch::Tensor& y, const CrossBatchMemory* memory) {
  torch::Tensor memory_z, memory_y;
  if (memory != nullptr && memory->size() > 0) {
    memory_z = memory->z();
    memory_y = memory->y();
  }
  const double margin = EffectiveMargin(options);
  torch::Tensor loss;
  switch (options.loss) {
    case MetricLoss::kTriplet: loss = TripletLoss(z, y, margin, memory_z, memory_y); break;
    case MetricLoss::kTripletPerQuery:
      loss = TripletPerQueryLoss(z, y, margin, memory_z, memory_y);
      break;
    case MetricLoss::kContrastive: loss = ContrastiveLoss(z, y, margin, memory_z, memory_y); break;
  }
  if (options.koleo > 0) loss = loss + static_cast<double>(options.koleo) * KoLeoLoss(z);
  return loss;
}

// Each query's leave-one-out average precision, with its label; queries
// without another relevant row are left out.
struct QueryAps {
  std::vector<double> ap;
  std::vector<int64_t> label;
};

QueryAps LeaveOneOutAps(const torch::Tensor& z_in, const torch::Tensor& y_in) {
  torch::NoGradGuard no_grad;
  const torch::Tensor z = z_in.detach().to(torch::kFloat);
  const torch::Tensor y = y_in.reshape(-1).to(torch::kLong);
  const int64_t n = z.size(0);
  QueryAps out;
  if (n < 2) return out;
  const int64_t chunk = std::max<int64_t>(1, kMaxChunkElements / n);
  const torch::Tensor ranks = torch::arange(1, n, torch::kFloat);  // 1..n-1
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t end = std::min(n, start + chunk);
    torch::Tensor scores = z.slice(0, start, end).matmul(z.t());
    // The query itself goes last, then is cut off: leave-one-out.
    scores.scatter_(1, torch::arange(start, end, torch::kLong).unsqueeze(1),
                    -std::numeric_limits<float>::infinity());
    const torch::Tensor order =
        std::get<1>(scores.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true)).slice(1, 0, n - 1);
    const torch::Tensor labels = y.slice(0, start, end);
    const torch::Tensor relevant = y.index({order}).eq(labels.unsqueeze(1)).to(torch::kFloat);
    const torch::Tensor relevant_count = relevant.sum(1);
    const torch::Tensor ap =
        ((relevant.cumsum(1) / ranks * relevant).sum(1) / relevant_count.clamp_min(1))
            .to(torch::kDouble).contiguous();
    const torch::Tensor counts = relevant_count.to(torch::kLong).contiguous();
    const torch::Tensor chunk_labels = labels.contiguous();
    for (int64_t q = 0; q < end - start; ++q) {
      if (counts.data_ptr<int64_t>()[q] == 0) continue;
      out.ap.push_back(ap.data_ptr<double>()[q]);
      out.label.push_back(chunk_labels.data_ptr<int64_t>()[q]);
    }
  }
  return out;
}

double LeaveOneOutMap(const torch::Tensor& z, const torch::Tensor& y) {
  const QueryAps aps = LeaveOneOutAps(z, y);
  double sum = 0;
  for (double ap : aps.ap) sum += ap;
  return aps.ap.empty() ? 0 : sum / static_cast<double>(aps.ap.size());
}

std::map<int64_t, double> LeaveOneOutClassMaps(const torch::Tensor& z, const torch::Tensor& y) {
  const QueryAps aps = LeaveOneOutAps(z, y);
  std::map<int64_t, std::pair<double, int64_t>> sums;
  for (size_t q = 0; q < aps.ap.size(); ++q) {
    auto& [sum, count] = sums[aps.label[q]];
    sum += aps.ap[q];
    ++count;
  }
  std::map<int64_t, double> out;
  for (const auto& [label, s] : sums) out[label] = s.first / static_cast<double>(s.second);
  return out;
}

std::vector<std::vector<int64_t>> PkBatches(const std::vector<int32_t>& labels, int p, int k,
                                            std::mt19937& rng) {
  std::map<int32_t, std::vector<int64_t>> by_label;  // ordered: deterministic
  for (size_t i = 0; i < labels.size(); ++i) by_label[labels[i]].push_back(static_cast<int64_t>(i));
  std::vector<std::vector<int64_t>> classes;  // those that anchor
  for (auto& [label, rows] : by_label) {
    if (rows.size() >= 2) classes.push_back(std::move(rows));
  }
  if (classes.empty() || p < 1 || k < 1) return {};
  const size_t per_batch = std::min(static_cast<size_t>(p), classes.size());
  const size_t size = static_cast<size_t>(k);

  // Each class's rows, shuffled and cut into chunks of k: every row is used
  // once an epoch (the last chunk of a class is topped up).
  std::vector<std::deque<std::vector<int64_t>>> chunks(classes.size());
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<int64_t> rows = classes[c];
    Shuffle(rows, rng);
    for (size_t start = 0; start < rows.size(); start += size) {
      std::vector<int64_t> chunk(rows.begin() + start,
                                 rows.begin() + std::min(rows.size(), start + size));
      TopUp(chunk, classes[c], size, rng);
      chunks[c].push_back(std::move(chunk));
    }
  }
  std::vector<std::vector<int64_t>> batches;
  while (true) {
    std::vector<size_t> open;
    std::vector<int64_t> left;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (!chunks[c].empty()) {
        open.push_back(c);
        left.push_back(static_cast<int64_t>(chunks[c].size()));
      }
    }
    if (open.empty()) break;
    // Weighted by chunks left, so that the big classes do not end up alone
    // in the last batches of the epoch.
    std::vector<int64_t> batch;
    std::vector<bool> in_batch(classes.size(), false);
    for (size_t i : WeightedSample(left, std::min(per_batch, open.size()), rng)) {
      const size_t c = open[i];
      in_batch[c] = true;
      batch.insert(batch.end(), chunks[c].front().begin(), chunks[c].front().end());
      chunks[c].pop_front();
    }
    // Too few classes left: fresh rows of others, so that every batch has
    // min(p, classes) classes (negatives to learn from).
    std::vector<size_t> others;
    for (size_t c = 0; c < classes.size(); ++c) {
      if (!in_batch[c]) others.push_back(c);
    }
    Shuffle(others, rng);
    for (size_t i = 0; batch.size() < per_batch * size && i < others.size(); ++i) {
      std::vector<int64_t> chunk;
      TopUp(chunk, classes[others[i]], size, rng);
      batch.insert(batch.end(), chunk.begin(), chunk.end());
    }
    batches.push_back(std::move(batch));
  }
  return batches;
}

}  // namespace pixseek::train
