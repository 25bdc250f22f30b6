// TrainPq: the product quantizer's codebooks, learned by the index module's
// ProductQuantizer::Train (FAISS stays inside src/index/pq.cc) and returned
// in the form the index stores them.
#include <string>

#include "index/pq.h"
#include "pixseek/train.h"

namespace pixseek {

Result<PqCodebooks> TrainPq(std::span<const float> vectors, int dim,
                            const PqTrainOptions& options) {
  if (dim < 1 || vectors.size() % static_cast<size_t>(dim) != 0) {
    return Status::InvalidArgument("PQ: the vectors do not hold whole rows of " +
                                   std::to_string(dim));
  }
  const size_t n = vectors.size() / static_cast<size_t>(dim);
  PIXSEEK_ASSIGN_OR_RETURN(ProductQuantizer pq,
                           ProductQuantizer::Train(dim, options.m, vectors.data(), n, options.seed));
  PqCodebooks codebooks;
  codebooks.dim = pq.dim();
  codebooks.m = pq.m();
  PIXSEEK_RETURN_IF_ERROR(pq.Save(&codebooks.bytes));
  return codebooks;
}

}  // namespace pixseek
