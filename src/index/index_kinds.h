// The index kinds' openers and verifiers for the registry
// (index_registry.cc), each defined beside its index.
#ifndef PIXSEEK_INDEX_INDEX_KINDS_H_
#define PIXSEEK_INDEX_INDEX_KINDS_H_

#include <memory>
#include <span>

#include "pixseek/disk_index.h"
#include "pixseek/vector_index.h"

namespace pixseek {

// "flat": DIR/vectors.flat (flat_index.cc).
Result<std::unique_ptr<VectorIndex>> OpenFlatIndexFromSpec(const VectorIndexSpec& spec);
// "disk": DIR/index/ (disk_index.cc).
Result<std::unique_ptr<VectorIndex>> OpenDiskIndexFromSpec(const VectorIndexSpec& spec);
// "milvus": a collection of the Milvus server at spec.url; nothing in DIR
// (milvus_index.cc).
Result<std::unique_ptr<VectorIndex>> OpenMilvusIndexFromSpec(const VectorIndexSpec& spec);

// Their VerifyVectorIndex, beside each opener.
Result<IndexVerifyReport> VerifyFlatIndexFromSpec(const VectorIndexSpec& spec);
Result<IndexVerifyReport> VerifyDiskIndexFromSpec(const VectorIndexSpec& spec);
Result<IndexVerifyReport> VerifyMilvusIndexFromSpec(const VectorIndexSpec& spec);

// The milvus index's parameter table (milvus_index.cc).
std::span<const IndexParamSpec> MilvusIndexParamSpecs();

// Every table parameter of `options` (disk_params.cc).
IndexParams DiskIndexParamsOf(const DiskIndexOptions& options);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_INDEX_KINDS_H_
