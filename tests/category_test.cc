// The query's category: the vote of the nearest neighbours' labels, the
// trained head's classifier when there is one, and the filter that keeps a
// search's results to one category by searching deeper.
#include "service/category.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pixseek {
namespace {

QueryHit Hit(int64_t id, float score, const std::string& label) {
  QueryHit hit;
  hit.id = id;
  hit.score = score;
  hit.record.id = id;
  hit.record.label = label;
  return hit;
}

TEST(QueryCategoryTest, VoteWeighsNeighboursByScore) {
  // Two "cat" neighbours outweigh three weaker "dog" ones.
  const std::vector<QueryHit> hits = {Hit(1, 0.9f, "cat"), Hit(2, 0.3f, "dog"),
                                      Hit(3, 0.8f, "cat"), Hit(4, 0.3f, "dog"),
                                      Hit(5, 0.3f, "dog")};
  auto vote = VoteCategory(hits, 10);
  ASSERT_TRUE(vote);
  EXPECT_EQ(vote->label, "cat");
  EXPECT_NEAR(vote->confidence, 1.7 / 2.6, 1e-5);
  // Only the first k vote.
  vote = VoteCategory(hits, 2);
  ASSERT_TRUE(vote);
  EXPECT_EQ(vote->label, "cat");
  EXPECT_NEAR(vote->confidence, 0.9 / 1.2, 1e-5);
}

TEST(QueryCategoryTest, UnlabelledNeighboursLowerTheConfidence) {
  const std::vector<QueryHit> hits = {Hit(1, 0.5f, ""), Hit(2, 0.5f, "cat"), Hit(3, 0.5f, "")};
  auto vote = VoteCategory(hits, 10);
  ASSERT_TRUE(vote);
  EXPECT_EQ(vote->label, "cat");
  EXPECT_NEAR(vote->confidence, 1.0 / 3.0, 1e-5);
  // Nothing labelled: nothing to predict.
  const std::vector<QueryHit> unlabelled = {Hit(1, 0.9f, ""), Hit(2, 0.8f, "")};
  EXPECT_FALSE(VoteCategory(unlabelled, 10));
  EXPECT_FALSE(VoteCategory({}, 10));
}

TEST(QueryCategoryTest, TiesGoToTheNearerNeighbour) {
  std::vector<QueryHit> hits = {Hit(1, 0.5f, "zebra"), Hit(2, 0.5f, "ant")};
  auto vote = VoteCategory(hits, 10);
  ASSERT_TRUE(vote);
  EXPECT_EQ(vote->label, "zebra");
  EXPECT_NEAR(vote->confidence, 0.5, 1e-5);
  std::swap(hits[0], hits[1]);
  EXPECT_EQ(VoteCategory(hits, 10)->label, "ant");
}

TEST(QueryCategoryTest, DissimilarNeighboursNeverVoteAgainst) {
  // Negative cosines count as tiny equal weights, not negative ones.
  const std::vector<QueryHit> hits = {Hit(1, -0.2f, "cat"), Hit(2, -0.5f, "dog"),
                                      Hit(3, -0.6f, "dog")};
  auto vote = VoteCategory(hits, 10);
  ASSERT_TRUE(vote);
  EXPECT_EQ(vote->label, "dog");
  EXPECT_NEAR(vote->confidence, 2.0 / 3.0, 1e-4);
}

TEST(QueryCategoryTest, TheTrainedClassifierPredictsWhenThereIsOne) {
  HeadParameters p;
  p.input_dimension = 2;
  p.labels = {"left", "right"};
  p.classifier_w = {1, 0, 0, 1};  // row 0 reads x, row 1 reads y
  p.classifier_b = {0, 0};
  auto head = TrainedHead::FromParameters(p);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  const std::vector<QueryHit> neighbours = {Hit(1, 0.9f, "cat")};
  const std::vector<float> base = {0.0f, 4.0f};
  auto predicted = PredictCategory(&*head, base, neighbours);
  ASSERT_TRUE(predicted);
  EXPECT_EQ(predicted->label, "right");
  EXPECT_GT(predicted->confidence, 0.9f);
  // No base feature (or no head): the neighbours vote.
  EXPECT_EQ(PredictCategory(&*head, {}, neighbours)->label, "cat");
  EXPECT_EQ(PredictCategory(nullptr, base, neighbours)->label, "cat");
}

TEST(QueryCategoryTest, FilterResolvesAutoAndValidates) {
  const CategoryPrediction cat{"cat", 0.7f};
  EXPECT_FALSE(CategoryFilter("", cat));
  EXPECT_EQ(CategoryFilter("auto", cat), "cat");
  EXPECT_FALSE(CategoryFilter("auto", std::nullopt));  // nothing predicted: no filter
  EXPECT_EQ(CategoryFilter("dog", cat), "dog");
  EXPECT_TRUE(ValidateCategory("").ok());
  EXPECT_TRUE(ValidateCategory("auto").ok());
  EXPECT_TRUE(ValidateCategory("Straße 7").ok());
  EXPECT_EQ(ValidateCategory("a\nb").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateCategory(std::string(256, 'a')).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pixseek
