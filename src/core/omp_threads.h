// ScopedOmpThreads: sets OpenMP's thread count for a scope and restores it.
//
// FAISS parallelises with OpenMP, whose threads busy-wait between the many
// tiny parallel regions of k-means and of a PQ with hundreds of sub-spaces:
// on 2 cores that made PQ training 10x slower than one thread. pixseek runs
// FAISS single-threaded where it parallelises on its own (src/index/pq.cc,
// src/train, the SIFT-VLAD embedder). Header-only: only the files that link
// OpenMP include it.
#ifndef PIXSEEK_CORE_OMP_THREADS_H_
#define PIXSEEK_CORE_OMP_THREADS_H_

#include <omp.h>

namespace pixseek {

class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

}  // namespace pixseek

#endif  // PIXSEEK_CORE_OMP_THREADS_H_
