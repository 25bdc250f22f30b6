// Parsing, validation and the JSON form of vector-index parameters
// (include/pixseek/index_params.h).
#include "pixseek/index_params.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace pixseek {
namespace {

std::string NumberText(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string RangeText(const IndexParamSpec& spec) {
  // Byte counts go up to what int64 holds; no one needs that bound written.
  if (spec.max >= 1e18) return std::string(spec.min_exclusive ? "> " : ">= ") + NumberText(spec.min);
  return std::string(spec.min_exclusive ? "(" : "[") + NumberText(spec.min) + ", " +
         NumberText(spec.max) + "]";
}

std::string ChoicesText(const IndexParamSpec& spec) {
  std::string list;
  for (size_t i = 0; i < spec.choices.size(); ++i) {
    if (i > 0) list += i + 1 == spec.choices.size() ? " or " : ", ";
    list += spec.choices[i];
  }
  return list;
}

bool InRange(const IndexParamSpec& spec, double v) {
  const bool above = spec.min_exclusive ? v > spec.min : v >= spec.min;
  return above && v <= spec.max;
}

}  // namespace

std::string ParamFlag(const IndexParamSpec& spec) {
  std::string flag = std::string("--") + spec.name;
  for (char& c : flag) c = c == '_' ? '-' : c;
  return flag;
}

std::string ParamCommandList(unsigned commands) {
  static constexpr std::pair<ParamCommand, const char*> kNames[] = {
      {kCmdBuild, "build"}, {kCmdQuery, "query"},   {kCmdEval, "eval"},      {kCmdServe, "serve"},
      {kCmdAdd, "add"},     {kCmdRemove, "remove"}, {kCmdCompact, "compact"}};
  std::vector<const char*> names;
  for (const auto& [bit, name] : kNames) {
    if (commands & bit) names.push_back(name);
  }
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " and " : ", ";
    out += names[i];
  }
  return out;
}

std::string ParamValueText(const ParamValue& value) {
  if (const auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) return NumberText(*d);
  return std::get<std::string>(value);
}

Status ValidateParam(const IndexParamSpec& spec, const ParamValue& value) {
  const std::string name = spec.name;
  switch (spec.type) {
    case ParamType::kInt:
    case ParamType::kBytes:
    case ParamType::kReal: {
      // An integer fits a real parameter too; a real never fits an integer one.
      const bool integer = spec.type != ParamType::kReal;
      double v = std::nan("");
      if (const auto* i = std::get_if<int64_t>(&value)) {
        v = static_cast<double>(*i);
      } else if (const auto* d = std::get_if<double>(&value); d != nullptr && !integer) {
        v = *d;
      }
      if (!std::isfinite(v) || !InRange(spec, v)) {
        const std::string range = RangeText(spec);
        const char* what = integer ? " must be an integer " : " must be a number ";
        const char* in = range[0] == '[' || range[0] == '(' ? "in " : "";
        return Status::InvalidArgument(name + what + in + range + ", got " +
                                       ParamValueText(value));
      }
      return Status::Ok();
    }
    case ParamType::kString: {
      const auto* v = std::get_if<std::string>(&value);
      bool allowed = false;
      for (const char* c : spec.choices) allowed = allowed || (v != nullptr && *v == c);
      if (!allowed) {
        return Status::InvalidArgument(name + " must be " + ChoicesText(spec) + ", got '" +
                                       ParamValueText(value) + "'");
      }
      return Status::Ok();
    }
  }
  return Status::Internal("unknown parameter type");
}

Result<ParamValue> ParseParam(const IndexParamSpec& spec, std::string_view text) {
  ParamValue value;
  if (spec.type == ParamType::kString) {
    value = std::string(text);
  } else if (spec.type == ParamType::kReal) {
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return Status::InvalidArgument(std::string(spec.name) + " must be a number, got '" +
                                     std::string(text) + "'");
    }
    value = v;
  } else {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return Status::InvalidArgument(std::string(spec.name) + " must be an integer, got '" +
                                     std::string(text) + "'");
    }
    value = v;
  }
  return CheckParam(spec, std::move(value));
}

Result<ParamValue> CheckParam(const IndexParamSpec& spec, ParamValue value) {
  PIXSEEK_RETURN_IF_ERROR(ValidateParam(spec, value));
  if (spec.type == ParamType::kReal) {
    if (const auto* i = std::get_if<int64_t>(&value)) value = static_cast<double>(*i);
  }
  return value;
}

void IndexParams::Set(std::string name, ParamValue value, std::string source) {
  values_[std::move(name)] = Entry{std::move(value), std::move(source)};
}

const IndexParams::Entry* IndexParams::Find(std::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second;
}

int64_t IndexParams::Int(std::string_view name, int64_t fallback) const {
  const Entry* e = Find(name);
  if (e == nullptr) return fallback;
  if (const auto* i = std::get_if<int64_t>(&e->value)) return *i;
  return fallback;
}

double IndexParams::Real(std::string_view name, double fallback) const {
  const Entry* e = Find(name);
  if (e == nullptr) return fallback;
  if (const auto* d = std::get_if<double>(&e->value)) return *d;
  if (const auto* i = std::get_if<int64_t>(&e->value)) return static_cast<double>(*i);
  return fallback;
}

std::string IndexParams::String(std::string_view name, const std::string& fallback) const {
  const Entry* e = Find(name);
  if (e == nullptr) return fallback;
  if (const auto* s = std::get_if<std::string>(&e->value)) return *s;
  return fallback;
}

std::string IndexParams::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, entry] : values_) {
    std::visit([&j, &name = name](const auto& v) { j[name] = v; }, entry.value);
  }
  return j.dump();
}

Result<IndexParams> IndexParams::FromJson(std::string_view text,
                                          std::span<const IndexParamSpec> specs,
                                          std::string source) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::InvalidArgument("index parameters must be a JSON object");
  IndexParams params;
  for (const auto& [key, node] : j.items()) {
    const IndexParamSpec* spec = FindParam(specs, key);
    if (spec == nullptr) return Status::InvalidArgument("unknown index parameter '" + key + "'");
    ParamValue value;
    if (node.is_number_integer()) {
      value = node.get<int64_t>();
    } else if (node.is_number()) {
      value = node.get<double>();
    } else if (node.is_string()) {
      value = node.get<std::string>();
    } else {
      return Status::InvalidArgument("index parameter " + key + " has the wrong type: " +
                                     node.dump());
    }
    PIXSEEK_ASSIGN_OR_RETURN(value, CheckParam(*spec, std::move(value)));
    params.Set(key, std::move(value), source);
  }
  return params;
}

const IndexParamSpec* FindParam(std::span<const IndexParamSpec> specs, std::string_view name) {
  for (const IndexParamSpec& spec : specs) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

Result<IndexParams> MergeParams(std::string_view kind, std::span<const IndexParamSpec> specs,
                                const IndexParams& recorded, const IndexParams& given,
                                bool existing, std::vector<std::string>* warnings) {
  for (const auto& [name, entry] : given.values()) {
    if (FindParam(specs, name) == nullptr) {
      return Status::InvalidArgument("the " + std::string(kind) + " index has no parameter '" +
                                     name + "' (given by " + entry.source + ")");
    }
  }
  IndexParams merged;
  for (const IndexParamSpec& spec : specs) {
    PIXSEEK_ASSIGN_OR_RETURN(ParamValue value, ParseParam(spec, spec.default_value));
    std::string source = "the default";
    if (const auto* r = recorded.Find(spec.name)) {
      value = r->value;
      source = r->source;
    }
    if (const auto* g = given.Find(spec.name)) {
      if (existing && spec.phase == ParamPhase::kCreate && g->value != value &&
          recorded.Find(spec.name) != nullptr) {
        const std::string what =
            std::string(spec.name) + " = " + ParamValueText(g->value) + " (" + g->source +
            ") cannot change an existing database: it was created with " + spec.name + " = " +
            ParamValueText(value) + ", fixed at creation (build a new database to change it)";
        // A flag asks for this run; a configuration file is shared by every
        // command and database, so it only earns a warning.
        if (g->source.rfind("--", 0) == 0 || warnings == nullptr) {
          return Status::FailedPrecondition(what);
        }
        warnings->push_back(what + "; using " + ParamValueText(value));
      } else {
        value = g->value;
        source = g->source;
      }
    }
    merged.Set(spec.name, std::move(value), std::move(source));
  }
  return merged;
}

std::string ParamsMarkdown(std::span<const IndexParamSpec> specs) {
  std::string out = "| key (`[index]`) | flag | type | range | default | set | commands | meaning |\n"
                    "|---|---|---|---|---|---|---|---|\n";
  for (const IndexParamSpec& spec : specs) {
    std::string type, range;
    switch (spec.type) {
      case ParamType::kInt: type = "integer"; range = RangeText(spec); break;
      case ParamType::kBytes: type = "bytes"; range = RangeText(spec); break;
      case ParamType::kReal: type = "number"; range = RangeText(spec); break;
      case ParamType::kString: type = "string"; range = ChoicesText(spec); break;
    }
    out += std::string("| `") + spec.name + "` | `" + ParamFlag(spec) + "` | " + type + " | " +
           range + " | " + spec.default_value + " | " +
           (spec.phase == ParamPhase::kCreate ? "at creation" : "each run") + " | " +
           ParamCommandList(spec.commands) + " | " + spec.doc + " |\n";
  }
  return out;
}

}  // namespace pixseek
