// Per-query PQ table making for the disk index's search: the float L2 tables
// then their quantization to bytes (two passes over the tables), against
// ProductQuantizer::ComputeL2ByteTables (one step). Prints one JSON row per
// way: microseconds per query, best of five rounds.
//
// Usage: pixseek_bench_pq_tables [dim] [m] [queries]   (default 2048 512 2000)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "index/pq.h"
#include "index/storage_kernels.h"

namespace {

std::vector<float> UnitVectors(size_t n, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> out(n * dim);
  for (size_t i = 0; i < n; ++i) {
    double norm = 0;
    for (size_t t = 0; t < dim; ++t) {
      out[i * dim + t] = gauss(rng);
      norm += double{out[i * dim + t]} * out[i * dim + t];
    }
    for (size_t t = 0; t < dim; ++t) out[i * dim + t] /= static_cast<float>(std::sqrt(norm));
  }
  return out;
}

// Best of five rounds of fn over every query, in microseconds per query.
double BestMicros(size_t queries, const std::function<void(size_t)>& fn) {
  double best = 1e300;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t q = 0; q < queries; ++q) fn(q);
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, us / static_cast<double>(queries));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t dim = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 2048;
  const int m = argc > 2 ? std::atoi(argv[2]) : 512;
  const size_t queries = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 2000;
  const std::vector<float> train = UnitVectors(2560, dim, 1);
  auto pq = pixseek::ProductQuantizer::Train(static_cast<int>(dim), m, train.data(), 2560, 42);
  if (!pq.ok()) {
    std::fprintf(stderr, "training failed: %s\n", pq.status().ToString().c_str());
    return 1;
  }
  const std::vector<float> query = UnitVectors(queries, dim, 2);
  std::vector<float> tables(pq->table_size());
  pixseek::PqByteTables bytes;
  unsigned checksum = 0;  // keeps the work observable
  const double two_steps = BestMicros(queries, [&](size_t q) {
    pq->ComputeL2Tables(query.data() + q * dim, tables.data());
    pixseek::QuantizePqTables(tables.data(), static_cast<size_t>(m), &bytes);
    checksum += bytes.lut[q % bytes.lut.size()];
  });
  const double one_step = BestMicros(queries, [&](size_t q) {
    pq->ComputeL2ByteTables(query.data() + q * dim, tables.data(), &bytes);
    checksum += bytes.lut[q % bytes.lut.size()];
  });
  std::printf(
      "{\"way\":\"l2_tables_then_quantize\",\"dim\":%zu,\"m\":%d,\"us_per_query\":%.2f}\n"
      "{\"way\":\"l2_byte_tables_one_step\",\"dim\":%zu,\"m\":%d,\"us_per_query\":%.2f,"
      "\"speedup\":%.3f,\"checksum\":%u}\n",
      dim, m, two_steps, dim, m, one_step, two_steps / one_step, checksum);
  return 0;
}
