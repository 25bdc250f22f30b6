// Which labelled class a search's query looks like, and the label that keeps
// a search's results to one class (QueryParams::category; QueryService
// applies it as RecordFilter::label). Internal to the
// service module; QueryService is the only caller.
#ifndef PIXSEEK_SERVICE_CATEGORY_H_
#define PIXSEEK_SERVICE_CATEGORY_H_

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pixseek/services.h"
#include "pixseek/status.h"
#include "pixseek/trained_head.h"

namespace pixseek {

// How many nearest neighbours vote on a query's category when no trained
// classifier predicts it: enough that one odd neighbour does not decide,
// few enough that the vote stays local.
inline constexpr size_t kCategoryVoters = 10;

// QueryParams::category's special value: filter by the predicted category.
inline constexpr std::string_view kAutoCategory = "auto";

// InvalidArgument unless `category` is "", "auto" or a plausible label (at
// most 255 bytes, no control characters).
[[nodiscard]] Status ValidateCategory(std::string_view category);

// The label most of the first `k` hits (best first) carry, each hit's vote
// weighted by its score (floored at a tiny positive weight, so that
// dissimilar neighbours count equally rather than against). Confidence is
// the winner's share of the weight of all k neighbours, unlabelled ones
// included: neighbours without a label are evidence the query belongs to
// none of the classes. Equal weights go to the label of the better-ranked
// neighbour. nullopt when none of the k hits has a label.
std::optional<CategoryPrediction> VoteCategory(std::span<const QueryHit> hits, size_t k);

// The category of a query: the trained head's classifier on the query's
// base feature when both are there (`head` may be null, `base_feature`
// empty when unknown), else the vote of its nearest neighbours.
std::optional<CategoryPrediction> PredictCategory(const TrainedHead* head,
                                                  std::span<const float> base_feature,
                                                  std::span<const QueryHit> neighbours);

// The label a search keeps: nullopt for no filter ("", or "auto" with
// nothing predicted), the prediction's label for "auto", else `category`.
std::optional<std::string> CategoryFilter(const std::string& category,
                                          const std::optional<CategoryPrediction>& predicted);

}  // namespace pixseek

#endif  // PIXSEEK_SERVICE_CATEGORY_H_
