// Near-duplicates (src/service/duplicates.h): the grouping on hand-made
// vectors (the threshold's edge, transitivity through union-find, chunking).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "service/duplicates.h"
#include "test_util.h"

namespace pixseek {
namespace {

// Unit vectors in 3-d at the given angles (degrees) in the x-y plane.
std::vector<float> AtAngles(std::initializer_list<double> degrees) {
  std::vector<float> rows;
  for (double d : degrees) {
    const double r = d * M_PI / 180.0;
    rows.insert(rows.end(), {static_cast<float>(std::cos(r)), static_cast<float>(std::sin(r)), 0});
  }
  return rows;
}

TEST(GroupNearDuplicatesTest, ThresholdIsInclusive) {
  // Rows 0 and 1 have the dot product 0.6f exactly (products with 1 and 0);
  // rows 2 and 3 are orthogonal to everything.
  const std::vector<float> rows = {1, 0, 0, 0.6f, 0.8f, 0, 0, 0, 1, 0, -1, 0};
  auto at = GroupNearDuplicates(rows.data(), 4, 3, 0.6f, 1);
  ASSERT_EQ(at.size(), 1u);
  EXPECT_EQ(at[0], (std::vector<uint32_t>{0, 1}));
  EXPECT_TRUE(GroupNearDuplicates(rows.data(), 4, 3, std::nextafter(0.6f, 2.0f), 1).empty());
}

TEST(GroupNearDuplicatesTest, TransitiveThroughAChain) {
  // 0-5 and 5-10 degrees are above cos(6 deg), 0-10 is not: one group of
  // three all the same. 50 and 54 degrees: a second group; 90 alone.
  const std::vector<float> rows = AtAngles({0, 50, 5, 90, 10, 54});
  const float threshold = static_cast<float>(std::cos(6 * M_PI / 180));
  for (size_t chunk : {size_t{0}, size_t{1}, size_t{2}, size_t{5}}) {
    auto groups = GroupNearDuplicates(rows.data(), 6, 3, threshold, 2, chunk);
    ASSERT_EQ(groups.size(), 2u) << "chunk " << chunk;
    EXPECT_EQ(groups[0], (std::vector<uint32_t>{0, 2, 4}));
    EXPECT_EQ(groups[1], (std::vector<uint32_t>{1, 5}));
  }
  EXPECT_TRUE(GroupNearDuplicates(rows.data(), 1, 3, 0.5f, 1).empty());
}

}  // namespace
}  // namespace pixseek
