// Parameter names -> blocks (see backbone_blocks.h).
#include "train/torch/backbone_blocks.h"

#include <algorithm>
#include <cctype>
#include <string_view>

namespace pixseek::train {
namespace {

std::vector<std::string> Split(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(),
                                   [](unsigned char c) { return std::isdigit(c) != 0; });
}

// "3" or "encoder_layer_11": a module that is one of a numbered sequence.
bool Indexed(std::string_view s) {
  if (AllDigits(s)) return true;
  const size_t underscore = s.rfind('_');
  return underscore != std::string_view::npos && underscore > 0 &&
         AllDigits(s.substr(underscore + 1));
}

// How many leading components all names share, leaving each at least a
// module and a parameter name.
size_t SharedPrefixLength(const std::vector<std::vector<std::string>>& split) {
  if (split.empty()) return 0;
  size_t shared = 0;
  while (true) {
    for (const auto& parts : split) {
      if (parts.size() < shared + 3 || parts[shared] != split.front()[shared]) return shared;
    }
    ++shared;
  }
}

std::string Join(const std::vector<std::string>& parts, size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < end; ++i) s += (i > begin ? "." : "") + parts[i];
  return s;
}

struct BlockKey {
  std::string name;
  bool indexed = false;
};

// The block of one name's components, those before `from` dropped; the
// last component is the parameter itself.
BlockKey KeyOf(const std::vector<std::string>& parts, size_t from) {
  const size_t leaf = parts.size() - 1;
  for (size_t i = from; i < leaf; ++i) {
    if (!Indexed(parts[i])) continue;
    // A stage of numbered blocks ("layer4.2.conv1.weight"): split it.
    const bool stage = i + 1 < leaf && AllDigits(parts[i + 1]) && i + 2 < leaf;
    return {Join(parts, from, stage ? i + 2 : i + 1), true};
  }
  return {Join(parts, from, std::max(leaf, from + 1)), false};
}

}  // namespace

std::vector<ParameterBlock> GroupIntoBlocks(const std::vector<std::string>& names) {
  std::vector<std::vector<std::string>> split;
  split.reserve(names.size());
  for (const auto& n : names) split.push_back(Split(n));
  const size_t from = SharedPrefixLength(split);

  std::vector<ParameterBlock> blocks;
  std::string previous;
  size_t last_indexed = std::string::npos;  // position in blocks
  for (size_t i = 0; i < split.size(); ++i) {
    const BlockKey key = KeyOf(split[i], from);
    if (blocks.empty() || key.name != previous) {
      blocks.push_back({key.name, {}});
      previous = key.name;
      if (key.indexed) last_indexed = blocks.size() - 1;
    }
    blocks.back().parameters.push_back(i);
  }
  // What follows the last numbered block is trained with it.
  if (last_indexed != std::string::npos && last_indexed + 1 < blocks.size()) {
    ParameterBlock& last = blocks[last_indexed];
    for (size_t b = last_indexed + 1; b < blocks.size(); ++b) {
      last.name += "+" + blocks[b].name;
      last.parameters.insert(last.parameters.end(), blocks[b].parameters.begin(),
                             blocks[b].parameters.end());
    }
    blocks.resize(last_indexed + 1);
  }
  return blocks;
}

}  // namespace pixseek::train
