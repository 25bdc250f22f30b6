#include "service/category.h"

#include <algorithm>
#include <map>

namespace pixseek {

Status ValidateCategory(std::string_view category) {
  constexpr size_t kMaxLabelBytes = 255;  // a folder name on every common file system
  if (category.size() > kMaxLabelBytes) {
    return Status::InvalidArgument("category must be at most " + std::to_string(kMaxLabelBytes) +
                                   " bytes");
  }
  for (char c : category) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return Status::InvalidArgument("category must not contain control characters");
    }
  }
  return Status::Ok();
}

std::optional<CategoryPrediction> VoteCategory(std::span<const QueryHit> hits, size_t k) {
  // Keeps a negative cosine from voting against a label.
  constexpr float kMinWeight = 1e-6f;
  struct Tally {
    double weight = 0;
    size_t first_rank = 0;  // the best-ranked neighbour with this label
  };
  std::map<std::string, Tally> tallies;
  double total = 0;
  const size_t voters = std::min(k, hits.size());
  for (size_t rank = 0; rank < voters; ++rank) {
    const double weight = std::max(hits[rank].score, kMinWeight);
    total += weight;
    const std::string& label = hits[rank].record.label;
    if (label.empty()) continue;
    auto [it, added] = tallies.try_emplace(label, Tally{0, rank});
    it->second.weight += weight;
  }
  const auto winner = std::max_element(tallies.begin(), tallies.end(), [](const auto& a, const auto& b) {
    if (a.second.weight != b.second.weight) return a.second.weight < b.second.weight;
    return a.second.first_rank > b.second.first_rank;  // the nearer neighbour wins a tie
  });
  if (winner == tallies.end()) return std::nullopt;
  return CategoryPrediction{winner->first, static_cast<float>(winner->second.weight / total)};
}

std::optional<CategoryPrediction> PredictCategory(const TrainedHead* head,
                                                  std::span<const float> base_feature,
                                                  std::span<const QueryHit> neighbours) {
  if (head != nullptr && head->has_classifier() && !base_feature.empty() &&
      base_feature.size() == static_cast<size_t>(head->input_dimension())) {
    return head->Classify(base_feature);
  }
  return VoteCategory(neighbours, kCategoryVoters);
}

std::optional<std::string> CategoryFilter(const std::string& category,
                                          const std::optional<CategoryPrediction>& predicted) {
  if (category.empty()) return std::nullopt;
  if (category != kAutoCategory) return category;
  if (!predicted) return std::nullopt;
  return predicted->label;
}

}  // namespace pixseek
