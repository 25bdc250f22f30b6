// The metric-learning losses of the training plugin (src/train/torch/
// losses.h) against PyTorch: tests/tools/reference_losses.py computes every
// loss naively with autograd on fixed inputs (float64), and the libtorch
// implementation must give the same values and gradients to 1e-5. Also the
// cross-batch memory's FIFO, leave-one-out mAP and the P x K batches.
// Skips the PyTorch comparison when Python's torch is missing.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "subprocess.h"
#include "test_util.h"
#include "train/torch/losses.h"

namespace pixseek::train {
namespace {

namespace fs = std::filesystem;
using testing::Python;
using testing::RunCommand;
using testing::TempDir;

constexpr double kTolerance = 1e-5;

torch::Tensor Matrix(const nlohmann::json& rows) {
  std::vector<double> values;
  for (const auto& row : rows) {
    for (double v : row) values.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  return torch::tensor(values, torch::kDouble).reshape({n, n > 0 ? -1 : 0});
}

torch::Tensor LabelVector(const nlohmann::json& labels) {
  return torch::tensor(labels.get<std::vector<int64_t>>(), torch::kLong);
}

// The reference file, written once for the whole suite.
class LossesVsPyTorchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path out = dir_->path() / "reference.json";
    const auto r = RunCommand(
        {Python(), (fs::path(PIXSEEK_SOURCE_DIR) / "tests/tools/reference_losses.py").string(),
         out.string()});
    if (r.exit_code == 77) {
      skip_ = Python() + " cannot import torch (install python3-torch): " + r.err;
      return;
    }
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::ifstream in(out);
    reference_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete dir_;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(reference_, nullptr);
  }

  // Checks every reference case of `loss` against `compute`.
  template <typename Compute>
  void CheckCases(const std::string& loss, Compute compute) {
    const nlohmann::json& ref = *reference_;
    const torch::Tensor y = LabelVector(ref["y"]);
    const torch::Tensor memory_z = Matrix(ref["memory_z"]);
    const torch::Tensor memory_y = LabelVector(ref["memory_y"]);
    int checked = 0;
    for (const auto& c : ref["cases"]) {
      if (c["loss"] != loss) continue;
      SCOPED_TRACE(loss + " margin " + std::to_string(c["margin"].get<double>()) +
                   (c["memory"].get<bool>() ? " with memory" : " without memory"));
      torch::Tensor z = Matrix(ref["z"]).requires_grad_(true);
      const bool memory = c["memory"];
      const torch::Tensor value = compute(z, y, c["margin"].get<double>(),
                                          memory ? memory_z : torch::Tensor(),
                                          memory ? memory_y : torch::Tensor());
      value.backward();
      EXPECT_NEAR(value.item<double>(), c["value"].get<double>(), kTolerance);
      const torch::Tensor expected = Matrix(c["grad"]);
      EXPECT_LT((z.grad() - expected).abs().max().item<double>(), kTolerance)
          << "gradient\n" << z.grad() << "\nexpected\n" << expected;
      ++checked;
    }
    EXPECT_GT(checked, 0) << "no reference case for " << loss;
  }

  static inline TempDir* dir_ = nullptr;
  static inline nlohmann::json* reference_ = nullptr;
  static inline std::string skip_;
};

TEST_F(LossesVsPyTorchTest, TripletMatchesValueAndGradient) {
  CheckCases("triplet", [](auto&&... a) { return TripletLoss(a...); });
}

TEST_F(LossesVsPyTorchTest, TripletPerQueryMatchesValueAndGradient) {
  CheckCases("triplet-per-query", [](auto&&... a) { return TripletPerQueryLoss(a...); });
}

TEST_F(LossesVsPyTorchTest, ContrastiveMatchesValueAndGradient) {
  CheckCases("contrastive", [](auto&&... a) { return ContrastiveLoss(a...); });
}

TEST_F(LossesVsPyTorchTest, KoLeoMatchesValueAndGradient) {
  CheckCases("koleo", [](const torch::Tensor& z, auto&&...) { return KoLeoLoss(z); });
}

// ---- Without PyTorch ------------------------------------------------------

torch::Tensor UnitRows(torch::Tensor x) { return x / x.norm(2, 1, true); }

TEST(TripletLossTest, WellSeparatedClassesGiveZeroLossWithAGraph) {
  // Two tight, opposite clusters: every triplet satisfies the margin.
  torch::Tensor z = UnitRows(torch::tensor({{1.0, 0.01}, {1.0, -0.01}, {-1.0, 0.01}, {-1.0, -0.01}},
                                           torch::kDouble))
                        .requires_grad_(true);
  const torch::Tensor y = torch::tensor({0, 0, 1, 1}, torch::kLong);
  for (const torch::Tensor& loss : {TripletLoss(z, y, 0.1), TripletPerQueryLoss(z, y, 0.1)}) {
    EXPECT_EQ(loss.item<double>(), 0);
    loss.backward();  // still part of z's graph
    EXPECT_EQ(z.grad().abs().sum().item<double>(), 0);
  }
}

TEST(BatchLossTest, UsesTheDefaultMarginAndAddsKoLeo) {
  torch::manual_seed(3);
  const torch::Tensor z = UnitRows(torch::randn({8, 5}, torch::kDouble));
  const torch::Tensor y = torch::tensor({0, 0, 1, 1, 2, 2, 3, 3}, torch::kLong);
  MetricTrainOptions options;
  options.loss = MetricLoss::kTriplet;
  EXPECT_DOUBLE_EQ(BatchLoss(options, z, y, nullptr).item<double>(),
                   TripletLoss(z, y, DefaultMargin(MetricLoss::kTriplet)).item<double>());
  options.loss = MetricLoss::kContrastive;
  options.koleo = 0.25f;
  EXPECT_NEAR(BatchLoss(options, z, y, nullptr).item<double>(),
              (ContrastiveLoss(z, y, DefaultMargin(MetricLoss::kContrastive)) + 0.25 * KoLeoLoss(z)).item<double>(), 1e-12);
  CrossBatchMemory memory(4, 5);
  memory.Enqueue(z.slice(0, 0, 4), y.slice(0, 0, 4));
  options.koleo = 0;
  EXPECT_NEAR(BatchLoss(options, z, y, &memory).item<double>(),
              ContrastiveLoss(z, y, 0.5, z.slice(0, 0, 4), y.slice(0, 0, 4)).item<double>(),
              1e-12);
}

// ---- Cross-batch memory ---------------------------------------------------

// Rows whose first value is their number, labels = 100 + number.
std::pair<torch::Tensor, torch::Tensor> Numbered(int from, int to) {
  const torch::Tensor numbers = torch::arange(from, to, torch::kFloat);
  return {torch::stack({numbers, -numbers}, 1), (numbers + 100).to(torch::kLong)};
}

std::vector<float> FirstColumn(const torch::Tensor& z) {
  const torch::Tensor c = z.select(1, 0).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::vector<int64_t> Values(const torch::Tensor& y) {
  const torch::Tensor c = y.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(CrossBatchMemoryTest, StartsEmpty) {
  CrossBatchMemory memory(5, 2);
  EXPECT_EQ(memory.size(), 0);
  EXPECT_EQ(memory.z().numel(), 0);
  EXPECT_EQ(memory.y().numel(), 0);
}

TEST(CrossBatchMemoryTest, KeepsTheLastCapacityRowsOldestFirstAcrossWrapAround) {
  CrossBatchMemory memory(5, 2);
  auto [z1, y1] = Numbered(0, 3);
  memory.Enqueue(z1, y1);
  EXPECT_EQ(memory.size(), 3);
  EXPECT_EQ(FirstColumn(memory.z()), (std::vector<float>{0, 1, 2}));
  auto [z2, y2] = Numbered(3, 6);  // one row falls out, the ring wraps
  memory.Enqueue(z2, y2);
  EXPECT_EQ(memory.size(), 5);
  EXPECT_EQ(FirstColumn(memory.z()), (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ(Values(memory.y()), (std::vector<int64_t>{101, 102, 103, 104, 105}));
  auto [z3, y3] = Numbered(6, 8);
  memory.Enqueue(z3, y3);
  EXPECT_EQ(FirstColumn(memory.z()), (std::vector<float>{3, 4, 5, 6, 7}));
  EXPECT_EQ(Values(memory.y()), (std::vector<int64_t>{103, 104, 105, 106, 107}));
  // The second column came along with the first.
  EXPECT_EQ(memory.z().select(1, 1).sum().item<float>(), -25.0f);
}

TEST(CrossBatchMemoryTest, ABatchLargerThanCapacityKeepsItsLastRows) {
  CrossBatchMemory memory(4, 2);
  auto [z1, y1] = Numbered(0, 3);
  memory.Enqueue(z1, y1);
  auto [z2, y2] = Numbered(10, 17);
  memory.Enqueue(z2, y2);
  EXPECT_EQ(memory.size(), 4);
  EXPECT_EQ(FirstColumn(memory.z()), (std::vector<float>{13, 14, 15, 16}));
  EXPECT_EQ(Values(memory.y()), (std::vector<int64_t>{113, 114, 115, 116}));
}

TEST(CrossBatchMemoryTest, StoresDetachedRows) {
  CrossBatchMemory memory(4, 2);
  auto [z, y] = Numbered(0, 2);
  z.requires_grad_(true);
  memory.Enqueue(z * 2, y);
  EXPECT_FALSE(memory.z().requires_grad());
  EXPECT_EQ(FirstColumn(memory.z()), (std::vector<float>{0, 2}));
}

TEST(CrossBatchMemoryTest, ZeroCapacityHoldsNothing) {
  CrossBatchMemory memory(0, 2);
  auto [z, y] = Numbered(0, 2);
  memory.Enqueue(z, y);
  EXPECT_EQ(memory.size(), 0);
}

// ---- Leave-one-out mAP ----------------------------------------------------

TEST(LeaveOneOutMapTest, MatchesAHandComputedRanking) {
  const torch::Tensor z = torch::tensor({{1.0f, 0.0f}, {0.9f, 0.1f}, {0.6f, 0.8f}, {0.0f, 1.0f}});
  const torch::Tensor y = torch::tensor({0, 1, 0, 1}, torch::kLong);
  // Query 0 ranks 1 (x), 2 (v), 3 (x): AP 1/2. Query 1 ranks 0 (x), 2 (x),
  // 3 (v): 1/3. Query 2 ranks 3 (x), 1 (x), 0 (v): 1/3. Query 3 ranks 2 (x),
  // 1 (v), 0 (x): 1/2.
  EXPECT_NEAR(LeaveOneOutMap(z, y), (0.5 + 1.0 / 3 + 1.0 / 3 + 0.5) / 4, 1e-6);
}

TEST(LeaveOneOutMapTest, LeavesOutQueriesWithoutAnotherRelevantRow) {
  const torch::Tensor z = torch::tensor({{1.0f, 0.0f}, {0.9f, 0.1f}, {0.0f, 1.0f}});
  const torch::Tensor y = torch::tensor({0, 0, 7}, torch::kLong);
  EXPECT_NEAR(LeaveOneOutMap(z, y), 1.0, 1e-6);
}

// ---- P x K batches --------------------------------------------------------

TEST(PkBatchesTest, EachBatchHasPClassesOfKRowsAndEveryRowIsUsed) {
  std::vector<int32_t> labels;
  for (int c = 0; c < 6; ++c) {
    for (int i = 0; i < 5 + 3 * c; ++i) labels.push_back(c);
  }
  labels.push_back(9);  // a class of one row never anchors
  std::mt19937 rng(7);
  const auto batches = PkBatches(labels, 4, 3, rng);
  ASSERT_FALSE(batches.empty());
  std::set<int64_t> used;
  for (const auto& batch : batches) {
    ASSERT_EQ(batch.size(), 12u);
    std::map<int32_t, int> per_class;
    for (int64_t row : batch) {
      ++per_class[labels[row]];
      used.insert(row);
    }
    EXPECT_EQ(per_class.size(), 4u);
    for (const auto& [label, count] : per_class) {
      EXPECT_EQ(count, 3) << "class " << label;
      EXPECT_NE(label, 9);
    }
  }
  EXPECT_EQ(used.size(), labels.size() - 1);
}

TEST(PkBatchesTest, IsDeterministicForTheSameSeed) {
  std::vector<int32_t> labels = {0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3};
  std::mt19937 a(11), b(11);
  EXPECT_EQ(PkBatches(labels, 2, 2, a), PkBatches(labels, 2, 2, b));
}

TEST(PkBatchesTest, ASmallClassIsRepeatedToK) {
  std::vector<int32_t> labels = {0, 0, 1, 1, 1, 1, 1};
  std::mt19937 rng(1);
  for (const auto& batch : PkBatches(labels, 2, 4, rng)) {
    EXPECT_EQ(batch.size(), 8u);
  }
}

}  // namespace
}  // namespace pixseek::train
