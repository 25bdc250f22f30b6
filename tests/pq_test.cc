// Tests for index/pq.h: quality on clustered unit vectors, exactness of the
// table scoring, determinism, serialisation and error paths.
#include "index/pq.h"
#include "index/storage_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace pixseek {
namespace {

constexpr int kDim = 64;
constexpr int kM = 16;
constexpr size_t kN = 5000;
constexpr size_t kQueries = 100;
constexpr size_t kTrain = 2000;

// n unit vectors drawn around `clusters` random unit centres.
std::vector<float> ClusteredUnitVectors(size_t n, int dim, int clusters, float noise,
                                        uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  auto normalise = [dim](float* v) {
    float norm = 0.0f;
    for (int t = 0; t < dim; ++t) norm += v[t] * v[t];
    norm = std::sqrt(norm);
    for (int t = 0; t < dim; ++t) v[t] /= norm;
  };
  std::vector<float> centres(static_cast<size_t>(clusters) * dim);
  for (float& c : centres) c = gauss(rng);
  for (int c = 0; c < clusters; ++c) normalise(&centres[c * dim]);
  std::vector<float> out(n * dim);
  std::uniform_int_distribution<int> pick(0, clusters - 1);
  for (size_t i = 0; i < n; ++i) {
    const float* c = &centres[pick(rng) * dim];
    for (int t = 0; t < dim; ++t) out[i * dim + t] = c[t] + noise * gauss(rng);
    normalise(&out[i * dim]);
  }
  return out;
}

class PqTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The first kN rows are the database; the last kQueries are held out as
    // queries from the same clusters.
    data_ = new std::vector<float>(ClusteredUnitVectors(kN + kQueries, kDim, 50, 0.15f, 1));
    // Trained on a sample, as an index would be; every row is then encoded.
    // (Each ctest process retrains, so keep the sample small.)
    auto pq = ProductQuantizer::Train(kDim, kM, data_->data(), kTrain, 42);
    ASSERT_TRUE(pq.ok()) << pq.status().ToString();
    pq_ = new ProductQuantizer(std::move(pq).value());
    codes_ = new std::vector<uint8_t>(kN * kM);
    ASSERT_TRUE(pq_->Encode(data_->data(), kN, codes_->data()).ok());
  }
  static void TearDownTestSuite() {
    delete data_;
    delete pq_;
    delete codes_;
  }

  static std::vector<float>* data_;
  static ProductQuantizer* pq_;
  static std::vector<uint8_t>* codes_;
};
std::vector<float>* PqTest::data_ = nullptr;
ProductQuantizer* PqTest::pq_ = nullptr;
std::vector<uint8_t>* PqTest::codes_ = nullptr;

TEST_F(PqTest, Shape) {
  EXPECT_EQ(pq_->dim(), kDim);
  EXPECT_EQ(pq_->m(), kM);
  EXPECT_EQ(pq_->code_size(), static_cast<size_t>(kM));
  EXPECT_EQ(pq_->table_size(), static_cast<size_t>(kM) * 256);
}

TEST_F(PqTest, ReconstructionErrorWellBelowVariance) {
  std::vector<float> decoded(kN * kDim);
  pq_->Decode(codes_->data(), kN, decoded.data());
  std::vector<double> mean(kDim, 0.0);
  for (size_t i = 0; i < kN; ++i)
    for (int t = 0; t < kDim; ++t) mean[t] += (*data_)[i * kDim + t];
  for (double& v : mean) v /= kN;
  double variance = 0.0;
  double error = 0.0;
  for (size_t i = 0; i < kN; ++i) {
    for (int t = 0; t < kDim; ++t) {
      const double x = (*data_)[i * kDim + t];
      variance += (x - mean[t]) * (x - mean[t]);
      error += (x - decoded[i * kDim + t]) * (x - decoded[i * kDim + t]);
    }
  }
  variance /= kN;
  error /= kN;
  RecordProperty("mse_over_variance", std::to_string(error / variance));
  EXPECT_LT(error, 0.15 * variance) << "mse " << error << " variance " << variance;
}

TEST_F(PqTest, ScoreIsSumOfTablesAndInnerProductWithDecoded) {
  std::vector<float> tables(pq_->table_size());
  const float* q = &(*data_)[7 * kDim];
  pq_->ComputeTables(q, tables.data());
  std::vector<float> decoded(kDim);
  for (size_t i = 0; i < 50; ++i) {
    const uint8_t* code = &(*codes_)[i * kM];
    float sum = 0.0f;
    for (int j = 0; j < kM; ++j) sum += tables[j * 256 + code[j]];
    EXPECT_EQ(pq_->Score(tables.data(), code), sum);
    pq_->Decode(code, 1, decoded.data());
    float ip = 0.0f;
    for (int t = 0; t < kDim; ++t) ip += q[t] * decoded[t];
    EXPECT_NEAR(pq_->Score(tables.data(), code), ip, 1e-4);
  }
}

// The L2 tables score 2 <q, x^> - |x^|^2, which is |q|^2 - |q - x^|^2: the
// same order as the squared L2 distance to the decoded vector, reversed.
TEST_F(PqTest, L2TablesScoreMinusSquaredDistanceToDecoded) {
  std::vector<float> tables(pq_->table_size());
  const float* q = &(*data_)[3 * kDim];
  pq_->ComputeL2Tables(q, tables.data());
  double q2 = 0;
  for (int t = 0; t < kDim; ++t) q2 += double{q[t]} * q[t];
  std::vector<float> decoded(kDim);
  for (size_t i = 0; i < 50; ++i) {
    const uint8_t* code = &(*codes_)[i * kM];
    pq_->Decode(code, 1, decoded.data());
    double d2 = 0;
    for (int t = 0; t < kDim; ++t) d2 += (double{q[t]} - decoded[t]) * (double{q[t]} - decoded[t]);
    EXPECT_NEAR(pq_->Score(tables.data(), code), q2 - d2, 1e-3);
  }
}

// The byte tables the disk search ranks by: each entry within half a step
// of its float table (shifted by its sub-space's minimum), so a code's score
// is within m / 2 steps of its float sum, and the scores of every node,
// scored in one batch or one at a time, agree.
TEST_F(PqTest, ByteTablesScoreWithinHalfAStepPerSubSpace) {
  std::vector<float> tables(pq_->table_size());
  pq_->ComputeL2Tables(&(*data_)[11 * kDim], tables.data());
  PqByteTables bytes;
  QuantizePqTables(tables.data(), kM, &bytes);
  ASSERT_EQ(bytes.m, size_t{kM});
  ASSERT_EQ(bytes.lut.size(), size_t{kM} * 256);
  ASSERT_GT(bytes.scale, 0.0f);
  float widest = 0;
  for (int j = 0; j < kM; ++j) {
    const auto [lo, hi] = std::minmax_element(&tables[j * 256], &tables[j * 256] + 256);
    widest = std::max(widest, *hi - *lo);
    for (int c = 0; c < 256; ++c) {
      EXPECT_NEAR(bytes.lut[j * 256 + c] * bytes.scale, tables[j * 256 + c] - *lo,
                  0.5f * bytes.scale + 1e-6f);
    }
  }
  EXPECT_NEAR(bytes.scale, widest / 255, 1e-6f);  // the widest range uses every step
  std::vector<uint32_t> nodes(300);
  std::iota(nodes.begin(), nodes.end(), 0u);
  std::vector<float> batch(nodes.size());
  PqScoreBatch(bytes, codes_->data(), nodes.data(), nodes.size(), batch.data());
  for (uint32_t node : nodes) {
    const float exact = pq_->Score(tables.data(), &(*codes_)[node * kM]);
    EXPECT_NEAR(batch[node], exact, 0.5f * kM * bytes.scale + 1e-4f) << "node " << node;
    float one;
    PqScoreBatch(bytes, codes_->data(), &node, 1, &one);
    EXPECT_NEAR(one, batch[node], bytes.scale / 4);
  }
}

// Every kernel the dispatch may pick gives the same integer sums: batches of
// 16 or more codes with m a multiple of 64 take the wide kernel where the CPU
// has one (AVX-512 VBMI), single codes always take the portable one.
TEST(PqByteTables, BatchesScoreAsSingleCodes) {
  for (size_t m : {64, 128, 192, 512, 24}) {
    std::mt19937 rng(static_cast<uint32_t>(m));
    std::vector<float> tables(m * 256);
    for (float& t : tables) t = std::uniform_real_distribution<float>(-1, 1)(rng);
    PqByteTables bytes;
    QuantizePqTables(tables.data(), m, &bytes);
    const size_t n = 500;
    std::vector<uint8_t> codes(n * m);
    for (uint8_t& c : codes) c = static_cast<uint8_t>(rng());
    for (size_t count : {16, 35, 64, 65, 200}) {
      std::vector<uint32_t> nodes(count);
      for (uint32_t& node : nodes) node = static_cast<uint32_t>(rng() % n);
      std::vector<float> batch(count);
      PqScoreBatch(bytes, codes.data(), nodes.data(), count, batch.data());
      for (size_t i = 0; i < count; ++i) {
        uint32_t sum = 0;
        for (size_t j = 0; j < m; ++j) sum += bytes.lut[j * 256 + codes[nodes[i] * m + j]];
        // Within a quarter step: a sum off by one would be a whole step off
        // (the kernels may round bias + scale * sum with or without FMA).
        ASSERT_NEAR(batch[i], bytes.bias + bytes.scale * static_cast<float>(sum), bytes.scale / 4)
            << "m " << m << " count " << count << " code " << i;
      }
    }
  }
}

// Constant tables (every centroid alike) still give a positive step and
// equal scores, rather than a division by zero.
TEST(PqByteTables, ConstantTablesGiveEqualScores) {
  const size_t m = 24;  // not a multiple of 8: the kernel's tail loop runs
  std::vector<float> tables(m * 256, 0.25f);
  PqByteTables bytes;
  QuantizePqTables(tables.data(), m, &bytes);
  EXPECT_GT(bytes.scale, 0.0f);
  std::vector<uint8_t> codes(3 * m);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i * 37);
  const uint32_t nodes[3] = {0, 1, 2};
  float out[3];
  PqScoreBatch(bytes, codes.data(), nodes, 3, out);
  for (float score : out) EXPECT_FLOAT_EQ(score, 0.25f * m);
}

TEST_F(PqTest, RecallAt10AgainstExactInnerProduct) {
  constexpr size_t kK = 10;
  std::vector<float> tables(pq_->table_size());
  size_t hits = 0;
  std::vector<size_t> order(kN);
  std::vector<float> exact(kN), approx(kN);
  for (size_t qi = 0; qi < kQueries; ++qi) {
    const float* query = &(*data_)[(kN + qi) * kDim];
    pq_->ComputeTables(query, tables.data());
    for (size_t i = 0; i < kN; ++i) {
      float ip = 0.0f;
      for (int t = 0; t < kDim; ++t) ip += query[t] * (*data_)[i * kDim + t];
      exact[i] = ip;
      approx[i] = pq_->Score(tables.data(), &(*codes_)[i * kM]);
    }
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + kK, order.end(),
                      [&](size_t a, size_t b) { return exact[a] > exact[b]; });
    std::vector<size_t> truth(order.begin(), order.begin() + kK);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + kK, order.end(),
                      [&](size_t a, size_t b) { return approx[a] > approx[b]; });
    for (size_t r = 0; r < kK; ++r) {
      if (std::find(truth.begin(), truth.end(), order[r]) != truth.end()) ++hits;
    }
  }
  const double recall = static_cast<double>(hits) / (kQueries * kK);
  RecordProperty("recall_at_10", std::to_string(recall));
  // Random ranking would give 10 / 5000 = 0.002.
  EXPECT_GT(recall, 0.5) << "recall@10 " << recall;
}

TEST_F(PqTest, EncodeIsDeterministic) {
  std::vector<uint8_t> again(kN * kM);
  ASSERT_TRUE(pq_->Encode(data_->data(), kN, again.data()).ok());
  EXPECT_EQ(again, *codes_);
  // One vector at a time gives the same codes as the batch.
  std::vector<uint8_t> one(kM);
  for (size_t i = 0; i < kN; i += 501) {
    ASSERT_TRUE(pq_->Encode(&(*data_)[i * kDim], 1, one.data()).ok());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), codes_->begin() + i * kM)) << i;
  }
}

TEST_F(PqTest, TrainingIsDeterministicForASeed) {
  constexpr size_t kSample = 400;
  auto a = ProductQuantizer::Train(kDim, kM, data_->data(), kSample, 7);
  auto b = ProductQuantizer::Train(kDim, kM, data_->data(), kSample, 7);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> sa, sb;
  ASSERT_TRUE(a->Save(&sa).ok());
  ASSERT_TRUE(b->Save(&sb).ok());
  EXPECT_EQ(sa, sb);
}

TEST_F(PqTest, SaveLoadRoundTrip) {
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(pq_->Save(&bytes).ok());
  auto loaded = ProductQuantizer::Load(bytes);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->dim(), kDim);
  EXPECT_EQ(loaded->m(), kM);
  std::vector<uint8_t> codes(kN * kM);
  ASSERT_TRUE(loaded->Encode(data_->data(), kN, codes.data()).ok());
  EXPECT_EQ(codes, *codes_);
  std::vector<float> t1(pq_->table_size()), t2(pq_->table_size());
  pq_->ComputeTables(data_->data(), t1.data());
  loaded->ComputeTables(data_->data(), t2.data());
  EXPECT_EQ(t1, t2);
  std::vector<uint8_t> again;
  ASSERT_TRUE(loaded->Save(&again).ok());
  EXPECT_EQ(again, bytes);
}

TEST_F(PqTest, DamagedBytesAreDataLoss) {
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(pq_->Save(&bytes).ok());
  // A flipped bit anywhere: header, centroids or checksum.
  for (size_t pos : {size_t{0}, size_t{5}, size_t{9}, size_t{13}, size_t{17}, size_t{100},
                     bytes.size() / 2, bytes.size() - 1}) {
    std::vector<uint8_t> bad = bytes;
    bad[pos] ^= 0x10;
    auto r = ProductQuantizer::Load(bad);
    ASSERT_FALSE(r.ok()) << pos;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << pos << " " << r.status().ToString();
  }
  // Truncated, overlong, empty.
  for (size_t size : {size_t{0}, size_t{10}, size_t{24}, bytes.size() - 1}) {
    auto r = ProductQuantizer::Load(std::span<const uint8_t>(bytes.data(), size));
    ASSERT_FALSE(r.ok()) << size;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << size;
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_EQ(ProductQuantizer::Load(longer).status().code(), StatusCode::kDataLoss);
}

TEST(PqErrorsTest, MNotDividingDimIsInvalidArgument) {
  const std::vector<float> data = ClusteredUnitVectors(300, kDim, 5, 0.2f, 3);
  auto r = ProductQuantizer::Train(kDim, 12, data.data(), 300, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("12"), std::string::npos) << r.status().message();
  EXPECT_EQ(ProductQuantizer::Train(kDim, 0, data.data(), 300, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ProductQuantizer::Train(0, 4, data.data(), 300, 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(PqErrorsTest, TooFewTrainingVectorsIsInvalidArgument) {
  const std::vector<float> data = ClusteredUnitVectors(255, kDim, 5, 0.2f, 3);
  auto r = ProductQuantizer::Train(kDim, kM, data.data(), 255, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("255"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("256"), std::string::npos) << r.status().message();
  // Exactly 256 trains.
  const std::vector<float> enough = ClusteredUnitVectors(256, kDim, 5, 0.2f, 3);
  EXPECT_TRUE(ProductQuantizer::Train(kDim, kM, enough.data(), 256, 1).ok());
}

TEST(PqErrorsTest, NonFiniteInputIsInvalidArgument) {
  std::vector<float> data = ClusteredUnitVectors(300, kDim, 5, 0.2f, 3);
  data[1000] = std::nanf("");
  EXPECT_EQ(ProductQuantizer::Train(kDim, kM, data.data(), 300, 1).status().code(),
            StatusCode::kInvalidArgument);
  data[1000] = 0.0f;
  auto pq = ProductQuantizer::Train(kDim, kM, data.data(), 300, 1);
  ASSERT_TRUE(pq.ok());
  data[5] = INFINITY;
  std::vector<uint8_t> codes(kM);
  EXPECT_EQ(pq->Encode(data.data(), 1, codes.data()).code(), StatusCode::kInvalidArgument);
}

TEST_F(PqTest, ByteTablesInOneStepEqualTablesThenQuantize) {
  std::vector<float> tables(pq_->table_size()), scratch(pq_->table_size());
  for (size_t q = 0; q < 5; ++q) {
    const float* query = data_->data() + (kN + q) * kDim;
    pq_->ComputeL2Tables(query, tables.data());
    PqByteTables two_steps, one_step;
    QuantizePqTables(tables.data(), kM, &two_steps);
    pq_->ComputeL2ByteTables(query, scratch.data(), &one_step);
    EXPECT_EQ(one_step.m, two_steps.m);
    EXPECT_EQ(one_step.bias, two_steps.bias) << "query " << q;
    EXPECT_EQ(one_step.scale, two_steps.scale) << "query " << q;
    EXPECT_EQ(one_step.lut, two_steps.lut) << "query " << q;
    EXPECT_EQ(scratch, tables) << "query " << q;
  }
}

TEST(NearestOf256Test, MatchesBruteForceWithTiesToTheSmallerIndex) {
  std::mt19937 rng(5);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (size_t dsub : {1, 2, 3, 4, 8, 17}) {
    std::vector<float> centroids(256 * dsub);  // centroid c at c * dsub
    for (float& x : centroids) x = gauss(rng);
    // Centroid 200 repeats centroid 7: rows nearest them must get 7.
    std::copy_n(&centroids[7 * dsub], dsub, &centroids[200 * dsub]);
    std::vector<float> transposed(256 * dsub), norms(256, 0.0f);
    for (size_t c = 0; c < 256; ++c) {
      for (size_t t = 0; t < dsub; ++t) {
        transposed[t * 256 + c] = centroids[c * dsub + t];
        norms[c] += centroids[c * dsub + t] * centroids[c * dsub + t];
      }
    }
    // Rows with a stride wider than dsub, as in a PQ sub-space; the first
    // ones sit on centroids 7 (and so 200) and 255.
    const size_t stride = dsub + 5, n = 300;
    std::vector<float> x(n * stride);
    for (float& v : x) v = gauss(rng);
    std::copy_n(&centroids[7 * dsub], dsub, &x[0]);
    std::copy_n(&centroids[255 * dsub], dsub, &x[stride]);
    std::vector<int64_t> labels(n);
    std::vector<float> distances(n);
    NearestOf256(transposed.data(), norms.data(), dsub, x.data(), stride, n, labels.data(),
                 distances.data());
    EXPECT_EQ(labels[0], 7) << "dsub " << dsub;
    EXPECT_EQ(labels[1], 255) << "dsub " << dsub;
    EXPECT_NEAR(distances[0], 0.0f, 1e-4) << "dsub " << dsub;
    for (size_t i = 0; i < n; ++i) {
      double best = 1e30;
      for (size_t c = 0; c < 256; ++c) {
        double d2 = 0;
        for (size_t t = 0; t < dsub; ++t) {
          const double diff = double{x[i * stride + t]} - centroids[c * dsub + t];
          d2 += diff * diff;
        }
        best = std::min(best, d2);
      }
      double got = 0;
      for (size_t t = 0; t < dsub; ++t) {
        const double diff = double{x[i * stride + t]} - centroids[labels[i] * dsub + t];
        got += diff * diff;
      }
      // The chosen centroid is the nearest, up to float rounding of the sums.
      EXPECT_LE(got, best + 1e-4 * (1 + best)) << "dsub " << dsub << " row " << i;
      EXPECT_NEAR(distances[i], got, 1e-4 * (1 + got)) << "dsub " << dsub << " row " << i;
      EXPECT_NE(labels[i], 200) << "a tie must go to the smaller index";
    }
  }
}

TEST_F(PqTest, EncodeChoosesTheNearestCentroid) {
  // Encode's code for a row is its decoded-nearest in every sub-space: no
  // other code of that sub-space reconstructs it more closely.
  std::vector<float> decoded(kDim);
  const size_t dsub = kDim / kM;
  for (size_t i = 0; i < 200; ++i) {
    const float* x = data_->data() + i * kDim;
    std::vector<uint8_t> code((*codes_).begin() + i * kM, (*codes_).begin() + (i + 1) * kM);
    pq_->Decode(code.data(), 1, decoded.data());
    for (size_t j = 0; j < size_t(kM); ++j) {
      auto error = [&](const float* y) {
        double e = 0;
        for (size_t t = 0; t < dsub; ++t) e += (x[j * dsub + t] - y[j * dsub + t]) * (x[j * dsub + t] - y[j * dsub + t]);
        return e;
      };
      const double chosen = error(decoded.data());
      std::vector<uint8_t> other = code;
      std::vector<float> alt(kDim);
      for (int c = 0; c < 256; ++c) {
        other[j] = static_cast<uint8_t>(c);
        pq_->Decode(other.data(), 1, alt.data());
        ASSERT_LE(chosen, error(alt.data()) + 1e-6) << "row " << i << " sub-space " << j;
      }
    }
  }
}

}  // namespace
}  // namespace pixseek
