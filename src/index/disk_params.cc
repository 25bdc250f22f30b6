// The disk index's parameter table: every user-settable DiskIndexOptions
// field, declared once with its type, range, default, when it applies, the
// commands that take it and its doc line (see include/pixseek/index_params.h).
#include <variant>

#include "index/index_kinds.h"
#include "pixseek/disk_index.h"

namespace pixseek {
namespace {

constexpr double kMaxBytes = 9.0e18;  // below INT64_MAX, exact enough for a range
constexpr const char* kStorages[] = {"fp32", "fp16", "int8"};

constexpr unsigned kSearching = kCmdQuery | kCmdEval | kCmdServe;
constexpr unsigned kCompacting = kCmdBuild | kCmdServe | kCmdCompact;

const IndexParamSpec kSpecs[] = {
    {"max_degree", ParamType::kInt, 1, 512, false, {}, "64", ParamPhase::kCreate, kCmdBuild,
     "Graph degree R: more edges find neighbours in fewer steps, cost disk and build time"},
    {"build_list", ParamType::kInt, 1, 4096, false, {}, "100", ParamPhase::kCreate, kCmdBuild,
     "Candidate list L while building the graph: larger builds a better graph, slower"},
    {"alpha", ParamType::kReal, 1, 4, false, {}, "1.2", ParamPhase::kCreate, kCmdBuild,
     "Pruning alpha: above 1 keeps long edges that shorten searches"},
    {"build_passes", ParamType::kInt, 1, 2, false, {}, "1", ParamPhase::kCreate, kCmdBuild,
     "Insertion passes (2: the paper's alpha = 1 pass first, twice the build time)"},
    {"storage", ParamType::kString, 0, 0, false, kStorages, "fp16", ParamPhase::kCreate, kCmdBuild,
     "Full-vector storage in the disk nodes, used to re-rank"},
    {"pq_bytes", ParamType::kInt, 0, 4096, false, {}, "0", ParamPhase::kCreate, kCmdBuild,
     "PQ code bytes per vector, a divisor of the dimension (0 = sized from ram_budget)"},
    {"ram_budget", ParamType::kBytes, 0, kMaxBytes, false, {}, "0", ParamPhase::kOpen,
     kCmdBuild | kSearching | kCmdCompact,
     "RAM for PQ codes and the node cache (0 = 10% of the raw vector bytes, at least 64 MiB)"},
    {"build_ram_budget", ParamType::kBytes, 0, kMaxBytes, false, {}, "0", ParamPhase::kOpen,
     kCompacting, "Peak RAM for building a disk graph; more data is built in shards (0 = 4 GiB)"},
    {"search_list", ParamType::kInt, 0, kMaxSearchList, false, {}, "0", ParamPhase::kOpen, kSearching,
     "Search list L: larger finds more true neighbours, slower (0 = max(64, 2k))"},
    {"beam_width", ParamType::kInt, 1, 64, false, {}, "4", ParamPhase::kOpen, kSearching,
     "Node reads issued together per search step"},
    {"compact_ratio", ParamType::kReal, 0, 100, true, {}, "0.1", ParamPhase::kOpen, kCompacting,
     "Merge the in-memory changes into a new disk graph when they exceed this fraction of it"},
};

// The DiskIndexOptions field each parameter sets, in kSpecs' order.
using Field = std::variant<int DiskIndexOptions::*, float DiskIndexOptions::*,
                           double DiskIndexOptions::*, uint64_t DiskIndexOptions::*,
                           std::string DiskIndexOptions::*>;
const Field kFields[] = {
    &DiskIndexOptions::max_degree,   &DiskIndexOptions::build_list,
    &DiskIndexOptions::alpha,        &DiskIndexOptions::build_passes,
    &DiskIndexOptions::storage,      &DiskIndexOptions::pq_bytes,
    &DiskIndexOptions::ram_budget,   &DiskIndexOptions::build_ram_budget,
    &DiskIndexOptions::search_list,  &DiskIndexOptions::beam_width,
    &DiskIndexOptions::compact_ratio,
};
static_assert(std::size(kFields) == std::size(kSpecs), "one field per parameter");

// One field to and from a parameter value.
void ReadField(const IndexParams& params, const char* name, std::string& field) {
  field = params.String(name, field);
}
void ReadField(const IndexParams& params, const char* name, float& field) {
  field = static_cast<float>(params.Real(name, field));
}
void ReadField(const IndexParams& params, const char* name, double& field) {
  field = params.Real(name, field);
}
template <typename Int>
void ReadField(const IndexParams& params, const char* name, Int& field) {
  field = static_cast<Int>(params.Int(name, static_cast<int64_t>(field)));
}

ParamValue FieldValue(const std::string& field) { return field; }
ParamValue FieldValue(float field) { return static_cast<double>(field); }
ParamValue FieldValue(double field) { return field; }
template <typename Int>
ParamValue FieldValue(Int field) {
  return static_cast<int64_t>(field);
}

}  // namespace

IndexParams DiskIndexParamsOf(const DiskIndexOptions& options) {
  IndexParams params;
  for (size_t i = 0; i < std::size(kSpecs); ++i) {
    std::visit([&](auto member) { params.Set(kSpecs[i].name, FieldValue(options.*member),
                                             "DiskIndexOptions"); },
               kFields[i]);
  }
  return params;
}

std::span<const IndexParamSpec> DiskIndexParamSpecs() { return kSpecs; }

DiskIndexOptions DiskIndexOptionsFrom(const IndexParams& params, DiskIndexOptions options) {
  for (size_t i = 0; i < std::size(kSpecs); ++i) {
    std::visit([&](auto member) { ReadField(params, kSpecs[i].name, options.*member); },
               kFields[i]);
  }
  return options;
}

}  // namespace pixseek
