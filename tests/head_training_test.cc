// TrainHead through the public API (the plugin pixseek_train.so), on
// generated data: Gaussian clusters plus a nuisance direction that the base
// features over-weight, so that a learned projection has something to fix.
// Skips when the plugin is not built (no libtorch).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>

#include "pixseek/train.h"

namespace pixseek {
namespace {

constexpr int kDimension = 64;
constexpr int kSignalDimensions = 16;  // the cluster centres live here

struct Generator {
  std::mt19937 rng;
  std::vector<std::vector<float>> centres;
  std::vector<float> nuisance;  // a unit direction, with large variance

  Generator(uint32_t seed, int classes) : rng(seed), nuisance(kDimension, 0) {
    std::normal_distribution<float> normal;
    for (int c = 0; c < classes; ++c) {
      std::vector<float> centre(kDimension, 0);
      for (int i = 0; i < kSignalDimensions; ++i) centre[i] = normal(rng);
      Normalise(centre);
      centres.push_back(centre);
    }
    for (int i = kSignalDimensions; i < kDimension; ++i) nuisance[i] = normal(rng);
    Normalise(nuisance);
  }

  static void Normalise(std::vector<float>& v) {
    double norm = 0;
    for (float x : v) norm += double{x} * x;
    for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  }

  // rows_per_class rows of each class in `classes`, L2-normalised.
  LabelledFeatures Sample(const std::vector<int>& classes, int rows_per_class,
                          double flip_fraction = 0) {
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<double> uniform;
    LabelledFeatures set;
    set.dimension = kDimension;
    for (int c : classes) {
      for (int r = 0; r < rows_per_class; ++r) {
        std::vector<float> row = centres[c];
        const float along_nuisance = 2.5f * normal(rng);
        for (int i = 0; i < kDimension; ++i) {
          row[i] += 0.12f * normal(rng) + along_nuisance * nuisance[i];
        }
        Normalise(row);
        set.features.insert(set.features.end(), row.begin(), row.end());
        int label = c;
        if (uniform(rng) < flip_fraction) label = classes[rng() % classes.size()];
        set.labels.push_back(label);
      }
    }
    return set;
  }
};

std::vector<int> Range(int from, int to) {
  std::vector<int> v(to - from);
  std::iota(v.begin(), v.end(), from);
  return v;
}

// y = normalise(A x + b) of every row, as a user of the result applies it.
LabelledFeatures Project(const HeadTrainResult& head, const LabelledFeatures& set) {
  if (head.keeps_base) return set;
  LabelledFeatures out;
  out.dimension = head.output_dimension;
  out.labels = set.labels;
  for (size_t r = 0; r < set.rows(); ++r) {
    std::vector<float> y(head.b);
    for (int o = 0; o < head.output_dimension; ++o) {
      for (int i = 0; i < head.input_dimension; ++i) {
        y[o] += head.a[o * head.input_dimension + i] * set.features[r * set.dimension + i];
      }
    }
    Generator::Normalise(y);
    out.features.insert(out.features.end(), y.begin(), y.end());
  }
  return out;
}

// Leave-one-out mAP by inner product, written independently of the plugin's.
double Map(const LabelledFeatures& set) {
  const size_t n = set.rows();
  const int d = set.dimension;
  double sum = 0;
  int queries = 0;
  for (size_t q = 0; q < n; ++q) {
    std::vector<std::pair<float, bool>> ranked;
    for (size_t j = 0; j < n; ++j) {
      if (j == q) continue;
      float s = 0;
      for (int i = 0; i < d; ++i) s += set.features[q * d + i] * set.features[j * d + i];
      ranked.emplace_back(-s, set.labels[j] == set.labels[q]);
    }
    std::sort(ranked.begin(), ranked.end());
    double hits = 0, ap = 0;
    for (size_t k = 0; k < ranked.size(); ++k) {
      if (ranked[k].second) ap += ++hits / static_cast<double>(k + 1);
    }
    if (hits > 0) {
      sum += ap / hits;
      ++queries;
    }
  }
  return queries > 0 ? sum / queries : 0;
}

MetricTrainOptions FastOptions() {
  MetricTrainOptions options;
  options.epochs = 15;
  options.batch_classes = 8;
  options.per_class = 4;
  options.learning_rate = 5e-3f;
  options.patience = 4;
  options.threads = 1;
  return options;
}

class HeadTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Generator data(42, 8);
    train_ = data.Sample(Range(0, 8), 60, /*flip_fraction=*/0.2);
    validation_ = data.Sample(Range(0, 8), 25);
    test_ = data.Sample(Range(0, 8), 25);
    // The plugin is absent in builds without libtorch.
    MetricTrainOptions probe = FastOptions();
    probe.epochs = 1;
    auto r = TrainHead(train_, validation_, probe);
    if (!r.ok() && r.status().code() == StatusCode::kUnsupported) {
      GTEST_SKIP() << r.status().message();
    }
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  LabelledFeatures train_, validation_, test_;
};

TEST_F(HeadTrainingTest, EveryLossImprovesHeldOutMapDespiteNoisyLabels) {
  const double base = Map(test_);
  struct Case {
    MetricLoss loss;
    int xbm;
    float koleo;
  };
  for (const Case& c : {Case{MetricLoss::kContrastive, 0, 0}, Case{MetricLoss::kTriplet, 0, 0},
                        Case{MetricLoss::kTripletPerQuery, 0, 0},
                        Case{MetricLoss::kContrastive, 96, 0.05f},
                        Case{MetricLoss::kTriplet, 96, 0}}) {
    SCOPED_TRACE(std::string(ToString(c.loss)) + " xbm " + std::to_string(c.xbm));
    MetricTrainOptions options = FastOptions();
    options.loss = c.loss;
    options.xbm = c.xbm;
    options.koleo = c.koleo;
    auto r = TrainHead(train_, validation_, options);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(r->keeps_base);
    EXPECT_GT(r->best_epoch, 0);
    EXPECT_EQ(r->output_dimension, kDimension);
    EXPECT_GT(r->validation_map_best, r->validation_map_base + 0.3);
    const double trained = Map(Project(*r, test_));
    std::printf("%s xbm %d: validation mAP %.3f -> %.3f, test mAP %.3f -> %.3f (epoch %d of %d)\n",
                std::string(ToString(c.loss)).c_str(), c.xbm, r->validation_map_base,
                r->validation_map_best, base, trained, r->best_epoch, r->epochs_run);
    EXPECT_GT(trained, base + 0.3);
    EXPECT_NEAR(r->validation_map_base, Map(validation_), 1e-4);
  }
}

TEST_F(HeadTrainingTest, ReportsEveryEpochAndFitsTheClassifier) {
  std::vector<EpochReport> seen;
  MetricTrainOptions options = FastOptions();
  options.on_epoch = [&](const EpochReport& r) { seen.push_back(r); };
  auto r = TrainHead(train_, validation_, options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(seen.size(), static_cast<size_t>(r->epochs_run) + 1);
  EXPECT_EQ(seen[0].epoch, 0);
  EXPECT_DOUBLE_EQ(seen[0].validation_map, r->validation_map_base);
  EXPECT_EQ(seen.back().epoch, r->epochs_run);
  EXPECT_DOUBLE_EQ(seen.back().best_validation_map, r->validation_map_best);
  EXPECT_GT(seen[1].rows_per_second, 0);
  EXPECT_EQ(r->history.size(), seen.size());
  EXPECT_EQ(r->classes, 8);
  EXPECT_EQ(r->classifier_w.size(), 8u * kDimension);
  // The nuisance does not fool a linear classifier on clean validation rows.
  EXPECT_GT(r->classifier_accuracy, 0.9);
}

TEST_F(HeadTrainingTest, ReducesTheDimensionStartingFromPca) {
  MetricTrainOptions options = FastOptions();
  options.dimension = 16;
  auto r = TrainHead(train_, validation_, options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_FALSE(r->keeps_base);
  EXPECT_EQ(r->output_dimension, 16);
  EXPECT_EQ(r->a.size(), 16u * kDimension);
  EXPECT_EQ(r->b.size(), 16u);
  EXPECT_GT(Map(Project(*r, test_)), Map(test_) + 0.15);
}

TEST_F(HeadTrainingTest, TheSameSeedGivesIdenticalWeights) {
  MetricTrainOptions options = FastOptions();
  options.epochs = 4;
  options.xbm = 64;
  auto first = TrainHead(train_, validation_, options);
  auto second = TrainHead(train_, validation_, options);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->a, second->a);
  EXPECT_EQ(first->b, second->b);
  EXPECT_EQ(first->classifier_w, second->classifier_w);
  EXPECT_EQ(first->validation_map_best, second->validation_map_best);
  options.seed = 99;
  auto other = TrainHead(train_, validation_, options);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(first->a, other->a);
}

TEST_F(HeadTrainingTest, CancelStopsAfterTheCurrentBatchWithTheBestSoFar) {
  std::atomic<bool> cancel{false};
  MetricTrainOptions options = FastOptions();
  options.patience = 100;
  options.cancel = &cancel;
  options.on_epoch = [&](const EpochReport& r) {
    if (r.epoch == 2) cancel = true;
  };
  auto r = TrainHead(train_, validation_, options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->cancelled);
  EXPECT_EQ(r->epochs_run, 2);
  EXPECT_EQ(r->history.size(), 3u);
  EXPECT_GE(r->best_epoch, 1);
  EXPECT_DOUBLE_EQ(r->validation_map_best, std::max(r->history[1].validation_map,
                                                    r->history[2].validation_map));
  EXPECT_FALSE(r->a.empty());
}

TEST_F(HeadTrainingTest, KeepsTheBaseWhenTrainingCannotHelp) {
  // Training labels are noise; validation is on held-out classes that the
  // base features already rank perfectly (no nuisance): nothing can beat it.
  Generator data(7, 12);
  LabelledFeatures train = data.Sample(Range(0, 8), 40);
  std::mt19937 rng(5);
  for (int32_t& label : train.labels) label = static_cast<int32_t>(rng() % 8);
  Generator clean(8, 4);
  clean.nuisance.assign(kDimension, 0);
  LabelledFeatures validation = clean.Sample(Range(0, 4), 10);
  for (int32_t& label : validation.labels) label += 8;  // classes unseen in training
  ASSERT_NEAR(Map(validation), 1.0, 1e-9);
  MetricTrainOptions options = FastOptions();
  options.patience = 2;
  auto r = TrainHead(train, validation, options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->keeps_base);
  EXPECT_EQ(r->best_epoch, 0);
  EXPECT_EQ(r->output_dimension, 0);
  EXPECT_TRUE(r->a.empty());
  EXPECT_EQ(r->validation_map_best, r->validation_map_base);
  EXPECT_EQ(r->epochs_run, 2);  // patience
  EXPECT_EQ(r->classifier_accuracy, 0);  // no validation class is known
}

TEST_F(HeadTrainingTest, RejectsInconsistentInput) {
  auto expect_invalid = [&](const LabelledFeatures& t, const LabelledFeatures& v,
                            const MetricTrainOptions& o, const char* what) {
    auto r = TrainHead(t, v, o);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << what << ": " << r.status().ToString();
  };
  const MetricTrainOptions options = FastOptions();
  LabelledFeatures one_class = train_;
  std::fill(one_class.labels.begin(), one_class.labels.end(), 3);
  expect_invalid(one_class, validation_, options, "one class");
  LabelledFeatures torn = train_;
  torn.features.pop_back();
  expect_invalid(torn, validation_, options, "rows not whole");
  LabelledFeatures short_labels = train_;
  short_labels.labels.pop_back();
  expect_invalid(short_labels, validation_, options, "label count");
  LabelledFeatures nan = train_;
  nan.features[5] = std::nanf("");
  expect_invalid(nan, validation_, options, "non-finite");
  expect_invalid(train_, LabelledFeatures{}, options, "empty validation");
  MetricTrainOptions wide = options;
  wide.dimension = kDimension + 1;
  expect_invalid(train_, validation_, wide, "dimension");
  MetricTrainOptions no_p = options;
  no_p.batch_classes = 0;
  expect_invalid(train_, validation_, no_p, "P");
  MetricTrainOptions no_k = options;
  no_k.per_class = 0;
  expect_invalid(train_, validation_, no_k, "K");
}

TEST(MetricLossTest, ParsesAndNamesEveryLoss) {
  for (MetricLoss loss : {MetricLoss::kTriplet, MetricLoss::kTripletPerQuery,
                          MetricLoss::kContrastive}) {
    auto parsed = ParseMetricLoss(ToString(loss));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, loss);
  }
  EXPECT_EQ(ParseMetricLoss("arcface").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FLOAT_EQ(DefaultMargin(MetricLoss::kTriplet), 0.1f);
  EXPECT_FLOAT_EQ(DefaultMargin(MetricLoss::kTripletPerQuery), 0.1f);
  EXPECT_FLOAT_EQ(DefaultMargin(MetricLoss::kContrastive), 0.5f);
}

}  // namespace
}  // namespace pixseek
