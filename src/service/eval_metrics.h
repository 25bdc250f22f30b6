// Retrieval metrics of one ranked query, from where its relevant images rank.
//
// Every metric eval reports is a function of two things only: the 1-based
// ranks of the relevant gallery images in the query's ranking, and how many
// relevant images there are. Reducing a ranking to those ranks first is what
// lets eval score 100,000 queries against 100,000 images without sorting
// 10^10 scores (eval_ranking.h finds the ranks by counting). Definitions are
// in docs/quality.md; tests/eval_test.cc checks them on hand-made rankings.
//
// Thread-safety: pure functions.
#ifndef PIXSEEK_SERVICE_EVAL_METRICS_H_
#define PIXSEEK_SERVICE_EVAL_METRICS_H_

#include <cstdint>
#include <span>

#include "pixseek/services.h"

namespace pixseek {

// The metrics of one query whose relevant images rank at `relevant_ranks`
// (1-based, strictly increasing) out of `relevant_total` relevant images.
// queries = 1. A query without relevant images scores 0 everywhere (it still
// counts as a query). A ranking known only down to its first places (an
// index's top k) passes the ranks it has: the missing relevant images count
// as never found, so recall and AP are not flattered.
EvalMetrics ScoreRanks(std::span<const uint32_t> relevant_ranks, size_t relevant_total);

// sum += one (every field, the PR curve pointwise, queries added).
void AccumulateMetrics(EvalMetrics& sum, const EvalMetrics& one);

// sum / n for every field but queries (kept as is); n = 0 leaves sum.
EvalMetrics MeanMetrics(EvalMetrics sum, double n);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_EVAL_METRICS_H_
