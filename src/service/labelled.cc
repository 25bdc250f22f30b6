// Labelled collections (images labelled by their first folder level) and the
// deterministic splits that keep training and measurement apart.
#include <algorithm>
#include <iterator>
#include <map>
#include <set>

#include "pixseek/services.h"

namespace pixseek {

Result<std::vector<LabelledImage>> ListLabelledImages(const MetadataStore& store,
                                                      const std::filesystem::path& root) {
  std::vector<LabelledImage> out;
  ListOptions list;
  list.limit = 1000;
  while (true) {
    PIXSEEK_ASSIGN_OR_RETURN(std::vector<ImageRecord> page, store.List(list));
    if (page.empty()) break;
    for (const ImageRecord& r : page) {
      const std::filesystem::path rel = std::filesystem::path(r.path).lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") continue;
      if (std::distance(rel.begin(), rel.end()) < 2) continue;  // no folder, no label
      out.push_back({r.id, r.path, rel.begin()->string()});
    }
    list.after_id = page.back().id;
  }
  std::sort(out.begin(), out.end(),
            [](const LabelledImage& a, const LabelledImage& b) { return a.path < b.path; });
  return out;
}

Result<DataSplit> ParseDataSplit(std::string_view name) {
  if (name == "none") return DataSplit::kNone;
  if (name == "images") return DataSplit::kImages;
  if (name == "classes") return DataSplit::kClasses;
  return Status::InvalidArgument("unknown split '" + std::string(name) +
                                 "' (none, images or classes)");
}

std::string_view ToString(DataSplit split) {
  switch (split) {
    case DataSplit::kNone: return "none";
    case DataSplit::kImages: return "images";
    case DataSplit::kClasses: return "classes";
  }
  return "none";
}

SplitParts SplitLabelled(const std::vector<LabelledImage>& images, DataSplit split) {
  std::vector<LabelledImage> sorted = images;
  std::sort(sorted.begin(), sorted.end(),
            [](const LabelledImage& a, const LabelledImage& b) { return a.path < b.path; });
  SplitParts parts;
  switch (split) {
    case DataSplit::kNone:
      parts.train = sorted;
      parts.held_out = std::move(sorted);
      break;
    case DataSplit::kImages: {
      std::map<std::string, size_t> seen;  // images of each class so far
      for (LabelledImage& image : sorted) {
        const size_t position = seen[image.label]++;
        (position % 3 == 2 ? parts.held_out : parts.train).push_back(std::move(image));
      }
      break;
    }
    case DataSplit::kClasses: {
      std::set<std::string> classes;
      for (const LabelledImage& image : sorted) classes.insert(image.label);
      const size_t training_classes = (classes.size() + 1) / 2;
      std::set<std::string> trains(classes.begin(),
                                   std::next(classes.begin(), static_cast<long>(training_classes)));
      for (LabelledImage& image : sorted) {
        (trains.count(image.label) ? parts.train : parts.held_out).push_back(std::move(image));
      }
      break;
    }
  }
  return parts;
}

}  // namespace pixseek
