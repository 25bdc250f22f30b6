// The byte layout of a disk graph file (docs/index_format.md, "Disk graph"),
// shared by the writer (disk_build.cc) and the reader (disk_graph.cc).
#ifndef PIXSEEK_INDEX_DISK_FORMAT_H_
#define PIXSEEK_INDEX_DISK_FORMAT_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "index/storage_kernels.h"

namespace pixseek::disk {

static_assert(std::endian::native == std::endian::little,
              "the disk graph format is little-endian and read by memcpy");

constexpr uint64_t kSector = 4096;
constexpr char kMagic[8] = {'P', 'X', 'S', 'K', 'G', 'R', 'P', 'H'};
constexpr uint32_t kVersion = 1;

// One section of the file: where it is, how long, and its XXH3-64 hash.
struct Section {
  uint64_t offset;
  uint64_t bytes;
  uint64_t hash;
};

// Sector 0 holds this struct, then zeros. Every field is little-endian.
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t dim;
  uint64_t n;  // nodes
  uint32_t max_degree;
  uint32_t storage;  // VectorStorage
  uint32_t node_bytes;
  uint32_t nodes_per_block;
  uint32_t sectors_per_block;
  uint32_t entry_node;
  uint32_t build_list;  // informational: how the graph was built
  float alpha;          // informational
  uint32_t pq_bytes;
  uint32_t reserved;
  uint64_t blocks_offset;  // = kSector
  uint64_t num_blocks;
  Section pq;            // ProductQuantizer::Save bytes
  Section codes;         // n * pq_bytes
  Section ids;           // n little-endian i64, in node order
  Section block_hashes;  // num_blocks XXH3-64 values, one per node block
  uint64_t file_bytes;
  uint64_t header_hash;  // XXH3-64 of every byte above
};
static_assert(sizeof(Header) == 192, "no padding in the header");

// How nodes pack into blocks: several small nodes per 4 KiB sector, or one
// large node over several sectors. A read fetches one whole block.
struct NodeLayout {
  uint32_t vector_bytes = 0;
  uint32_t node_bytes = 0;  // vector, u32 degree, max_degree u32 neighbours
  uint32_t nodes_per_block = 1;
  uint32_t sectors_per_block = 1;

  static NodeLayout Make(VectorStorage storage, size_t dim, size_t max_degree) {
    NodeLayout l;
    l.vector_bytes = static_cast<uint32_t>(StoredVectorBytes(storage, dim));
    l.node_bytes = static_cast<uint32_t>(l.vector_bytes + 4 + 4 * max_degree);
    if (l.node_bytes <= kSector) {
      l.nodes_per_block = static_cast<uint32_t>(kSector / l.node_bytes);
      l.sectors_per_block = 1;
    } else {
      l.nodes_per_block = 1;
      l.sectors_per_block = static_cast<uint32_t>((l.node_bytes + kSector - 1) / kSector);
    }
    return l;
  }
  uint64_t block_bytes() const { return uint64_t{sectors_per_block} * kSector; }
  uint64_t blocks(uint64_t n) const { return (n + nodes_per_block - 1) / nodes_per_block; }
};

inline uint64_t AlignUp(uint64_t x) { return (x + kSector - 1) / kSector * kSector; }

}  // namespace pixseek::disk

#endif  // PIXSEEK_INDEX_DISK_FORMAT_H_
