#include "bench_ann/ground_truth.h"

#include <faiss/utils/distances.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <future>
#include <limits>
#include <string>
#include <vector>

#include "core/phase_progress.h"
#include "core/omp_threads.h"
#include "core/parallel.h"
#include "index/disk_graph.h"
#include "index/vecs_io.h"

namespace pixseek {

namespace {

// Merges a query's running k best (ascending) with a block's (ascending,
// ids already global) into `out`, keeping the k smallest; on equal
// distances the smaller id first.
void MergeBest(const float* d1, const int64_t* i1, const float* d2, const int64_t* i2, size_t k,
               float* out_d, int64_t* out_i) {
  size_t a = 0, b = 0;
  for (size_t t = 0; t < k; ++t) {
    const bool take_a =
        i2[b] < 0 || (i1[a] >= 0 && (d1[a] < d2[b] || (d1[a] == d2[b] && i1[a] < i2[b])));
    if (take_a) {
      out_d[t] = d1[a];
      out_i[t] = i1[a++];
    } else {
      out_d[t] = d2[b];
      out_i[t] = i2[b++];
    }
  }
}

}  // namespace

Status ComputeGroundTruth(const GroundTruthOptions& options) {
  if (options.k == 0 || options.k > 100000) {
    return Status::InvalidArgument("bench gt: k must be in [1, 100000]");
  }
  PIXSEEK_ASSIGN_OR_RETURN(
      auto base,
      FbinVectorSource::Open(options.base, options.limit_base ? options.limit_base : SIZE_MAX));
  PIXSEEK_ASSIGN_OR_RETURN(FloatMatrix queries, ReadFbin(options.queries));
  const size_t n = base->size(), d = static_cast<size_t>(base->dimension()), nq = queries.rows;
  if (queries.cols != d) {
    return Status::InvalidArgument("bench gt: queries have dimension " +
                                   std::to_string(queries.cols) + ", the base " +
                                   std::to_string(d));
  }
  if (options.k > n) {
    return Status::InvalidArgument("bench gt: k = " + std::to_string(options.k) + " exceeds the " +
                                   std::to_string(n) + " base vectors");
  }
  if (n > size_t(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("bench gt: the .ibin format's int32 ids cannot number " +
                                   std::to_string(n) + " base vectors");
  }
  const size_t k = options.k;
  const size_t block_rows =
      std::max<size_t>(k, std::min<size_t>(n, options.block_bytes / 2 / (d * sizeof(float))));
  const int threads = ThreadCount(options.threads);
  ScopedOmpThreads omp(threads);

  // Running results, every slot empty (-1) at first.
  std::vector<float> best_d(nq * k, std::numeric_limits<float>::infinity());
  std::vector<int64_t> best_i(nq * k, -1);
  std::vector<float> block_d(nq * k), merged_d(nq * k);
  std::vector<int64_t> block_i(nq * k), merged_i(nq * k);

  // Two block buffers: the next is read while the current is searched.
  std::vector<float> cur(block_rows * d), next(block_rows * d);
  auto read_block = [&](size_t begin, std::vector<float>* into) {
    const size_t count = std::min(block_rows, n - begin);
    return base->Read(begin, count, into->data());
  };
  PhaseProgress progress("bench gt", options.progress);
  PIXSEEK_RETURN_IF_ERROR(read_block(0, &cur));
  for (size_t begin = 0; begin < n; begin += block_rows) {
    const size_t count = std::min(block_rows, n - begin);
    std::future<Status> pending;
    if (begin + count < n) {
      pending = std::async(std::launch::async, read_block, begin + count, &next);
    }
    // The block's own k best per query (FAISS sorts them, ids block-local).
    const size_t kb = std::min(k, count);
    std::fill(block_i.begin(), block_i.end(), -1);
    std::fill(block_d.begin(), block_d.end(), std::numeric_limits<float>::infinity());
    try {
      if (kb == k) {
        faiss::knn_L2sqr(queries.data.data(), cur.data(), d, nq, count, k, block_d.data(),
                         block_i.data());
      } else {
        std::vector<float> dd(nq * kb);
        std::vector<int64_t> ii(nq * kb);
        faiss::knn_L2sqr(queries.data.data(), cur.data(), d, nq, count, kb, dd.data(), ii.data());
        for (size_t q = 0; q < nq; ++q) {
          std::copy_n(dd.data() + q * kb, kb, block_d.data() + q * k);
          std::copy_n(ii.data() + q * kb, kb, block_i.data() + q * k);
        }
      }
    } catch (const std::exception& e) {
      if (pending.valid()) pending.wait();
      return Status::Internal(std::string("bench gt: FAISS failed: ") + e.what());
    }
    ParallelFor(nq, threads, [&](size_t q) {
      int64_t* ids = block_i.data() + q * k;
      for (size_t t = 0; t < k; ++t) {
        if (ids[t] >= 0) ids[t] += static_cast<int64_t>(begin);
      }
      MergeBest(best_d.data() + q * k, best_i.data() + q * k, block_d.data() + q * k, ids, k,
                merged_d.data() + q * k, merged_i.data() + q * k);
    });
    best_d.swap(merged_d);
    best_i.swap(merged_i);
    progress.Update("scan", begin + count, n);
    if (pending.valid()) {
      PIXSEEK_RETURN_IF_ERROR(pending.get());
      cur.swap(next);
    }
  }

  GroundTruth gt;
  gt.rows = nq;
  gt.k = k;
  gt.ids.resize(nq * k);
  gt.distances.resize(nq * k);
  for (size_t i = 0; i < nq * k; ++i) {
    gt.ids[i] = static_cast<int32_t>(best_i[i]);
    gt.distances[i] = std::max(best_d[i], 0.0f);  // as gen_vectors.py: rounding can go below 0
  }
  return WriteIbin(options.out, gt);
}

}  // namespace pixseek
