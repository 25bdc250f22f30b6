// The built-in candidates of the ANN benchmark: pixseek's exact flat index
// and the peers from hnswlib and FAISS. Each factory returns an unbuilt
// candidate; ann_bench.cc registers them under the names given here.
//
// Every candidate is used by one harness thread at a time (Build, then
// SearchAll calls); SearchAll starts its own query threads.
#ifndef PIXSEEK_BENCH_ANN_CANDIDATES_H_
#define PIXSEEK_BENCH_ANN_CANDIDATES_H_

#include <memory>

#include "bench_ann/ann_bench.h"

namespace pixseek {

// "disk": pixseek's disk graph index, built from the .fbin under the RAM
// budgets of options.disk and options.ram_budget, searched from SSD.
std::unique_ptr<AnnCandidate> MakeDiskCandidate(const AnnBenchOptions& options);

// "exact": pixseek's flat index (include/pixseek/vector_index.h), persisted
// in its workdir, one single-threaded Search call per query.
std::unique_ptr<AnnCandidate> MakeExactCandidate(const AnnBenchOptions& options);

// "hnswlib": hnswlib::HierarchicalNSW over InnerProductSpace, M=32,
// efConstruction=200, built with addPoint on options.threads threads; ef = L.
std::unique_ptr<AnnCandidate> MakeHnswlibCandidate(const AnnBenchOptions& options);

// "faiss-hnsw": faiss::IndexHNSWFlat, M=32, efConstruction=200, inner
// product, built with options.threads OpenMP threads; efSearch = L.
std::unique_ptr<AnnCandidate> MakeFaissHnswCandidate(const AnnBenchOptions& options);

// "faiss-ivfpq": faiss::IndexIVFPQ, inner product, nlist = 4 * sqrt(n),
// 8-bit codes of m bytes (the largest divisor of dim <= 128); nprobe = L.
std::unique_ptr<AnnCandidate> MakeFaissIvfPqCandidate(const AnnBenchOptions& options);

}  // namespace pixseek

#endif  // PIXSEEK_BENCH_ANN_CANDIDATES_H_
