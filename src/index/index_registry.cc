// The registry of vector-index kinds. A new backend adds its opener and
// parameter table in a file of its own and one line to kKinds.
#include <vector>

#include "index/index_kinds.h"
#include "pixseek/vector_index.h"

namespace pixseek {
namespace {

const VectorIndexKind kKinds[] = {
    {"disk", "the disk graph index (DiskANN-style): vectors on SSD, compressed codes in RAM",
     DiskIndexParamSpecs(), OpenDiskIndexFromSpec, "index/", VerifyDiskIndexFromSpec},
    {"flat", "exact search over every vector, all of them in RAM", {}, OpenFlatIndexFromSpec,
     "vectors.flat", VerifyFlatIndexFromSpec},
    {"milvus", "a collection on a Milvus server (VectorIndexSpec::url): shared by several nodes",
     MilvusIndexParamSpecs(), OpenMilvusIndexFromSpec, "", VerifyMilvusIndexFromSpec},
};

}  // namespace

std::span<const VectorIndexKind> VectorIndexKinds() { return kKinds; }

Result<const VectorIndexKind*> FindVectorIndexKind(std::string_view name) {
  std::string known;
  for (const VectorIndexKind& kind : kKinds) {
    if (name == kind.name) return &kind;
    known += (known.empty() ? "" : ", ") + std::string(kind.name);
  }
  return Status::InvalidArgument("unknown index kind '" + std::string(name) + "' (expected " +
                                 known + ")");
}

std::vector<IndexParamSpec> AllIndexParams() {
  std::vector<IndexParamSpec> all;
  for (const VectorIndexKind& kind : kKinds) {
    for (const IndexParamSpec& spec : kind.params) {
      if (FindParam(all, spec.name) == nullptr) all.push_back(spec);
    }
  }
  return all;
}

Result<std::unique_ptr<VectorIndex>> OpenVectorIndex(const VectorIndexSpec& spec) {
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* kind, FindVectorIndexKind(spec.kind));
  return kind->open(spec);
}

Result<IndexVerifyReport> VerifyVectorIndex(const VectorIndexSpec& spec) {
  PIXSEEK_ASSIGN_OR_RETURN(const VectorIndexKind* kind, FindVectorIndexKind(spec.kind));
  return kind->verify(spec);
}

}  // namespace pixseek
