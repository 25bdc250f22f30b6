// DiskIndexParams: the user-settable disk-index parameters, their JSON form
// (recorded in a database's manifest) and their ranges.
#include <nlohmann/json.hpp>

#include "pixseek/disk_index.h"

namespace pixseek {
namespace {

using nlohmann::json;

// Calls f(name, member) for every field, so the JSON reader, writer and
// validator cannot disagree on the list.
template <typename Params, typename F>
void ForEachField(Params& p, F&& f) {
  f("max_degree", p.max_degree);
  f("build_list", p.build_list);
  f("alpha", p.alpha);
  f("build_passes", p.build_passes);
  f("storage", p.storage);
  f("pq_bytes", p.pq_bytes);
  f("ram_budget", p.ram_budget);
  f("build_ram_budget", p.build_ram_budget);
  f("search_list", p.search_list);
  f("beam_width", p.beam_width);
  f("compact_ratio", p.compact_ratio);
}

template <typename T>
void Set(std::optional<T>& field, const T& value) {
  field = value;
}

template <typename T>
void Copy(const std::optional<T>& from, T& to) {
  if (from) to = *from;
}

template <typename T>
Status CheckRange(const char* name, const std::optional<T>& v, T lo, T hi) {
  if (v && (*v < lo || *v > hi)) {
    return Status::InvalidArgument("disk index parameter " + std::string(name) + " must be in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                   std::to_string(*v));
  }
  return Status::Ok();
}

}  // namespace

void DiskIndexParams::ApplyTo(DiskIndexOptions& o) const {
  Copy(max_degree, o.max_degree);
  Copy(build_list, o.build_list);
  Copy(alpha, o.alpha);
  Copy(build_passes, o.build_passes);
  Copy(storage, o.storage);
  Copy(pq_bytes, o.pq_bytes);
  Copy(ram_budget, o.ram_budget);
  Copy(build_ram_budget, o.build_ram_budget);
  Copy(search_list, o.search_list);
  Copy(beam_width, o.beam_width);
  Copy(compact_ratio, o.compact_ratio);
}

DiskIndexParams DiskIndexParams::From(const DiskIndexOptions& o) {
  DiskIndexParams p;
  Set(p.max_degree, o.max_degree);
  Set(p.build_list, o.build_list);
  Set(p.alpha, o.alpha);
  Set(p.build_passes, o.build_passes);
  Set(p.storage, o.storage);
  Set(p.pq_bytes, o.pq_bytes);
  Set(p.ram_budget, o.ram_budget);
  Set(p.build_ram_budget, o.build_ram_budget);
  Set(p.search_list, o.search_list);
  Set(p.beam_width, o.beam_width);
  Set(p.compact_ratio, o.compact_ratio);
  return p;
}

std::string DiskIndexParams::ToJson() const {
  json j = json::object();
  ForEachField(*this, [&](const char* name, const auto& field) {
    if (field) j[name] = *field;
  });
  return j.dump();
}

Result<DiskIndexParams> DiskIndexParams::FromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::InvalidArgument("disk index parameters must be a JSON object");
  DiskIndexParams p;
  std::string error;
  ForEachField(p, [&](const char* name, auto& field) {
    auto it = j.find(name);
    if (it == j.end() || !error.empty()) return;
    using T = typename std::remove_reference_t<decltype(field)>::value_type;
    try {
      field = it->template get<T>();
    } catch (const json::exception&) {
      error = std::string("disk index parameter ") + name + " has the wrong type: " + it->dump();
    }
  });
  if (!error.empty()) return Status::InvalidArgument(error);
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    ForEachField(p, [&](const char* name, const auto&) { known = known || key == name; });
    if (!known) return Status::InvalidArgument("unknown disk index parameter '" + key + "'");
  }
  PIXSEEK_RETURN_IF_ERROR(p.Validate());
  return p;
}

Status DiskIndexParams::Validate() const {
  PIXSEEK_RETURN_IF_ERROR(CheckRange("max_degree", max_degree, 1, 512));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("build_list", build_list, 1, 4096));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("alpha", alpha, 1.0f, 4.0f));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("build_passes", build_passes, 1, 2));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("pq_bytes", pq_bytes, 0, 4096));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("search_list", search_list, 0, 100000));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("beam_width", beam_width, 1, 64));
  PIXSEEK_RETURN_IF_ERROR(CheckRange("compact_ratio", compact_ratio, 0.0, 100.0));
  if (storage && *storage != "fp32" && *storage != "fp16" && *storage != "int8") {
    return Status::InvalidArgument("disk index parameter storage must be fp32, fp16 or int8, got '" +
                                   *storage + "'");
  }
  return Status::Ok();
}

}  // namespace pixseek
