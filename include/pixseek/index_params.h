// The parameters of the vector indexes: one table per index kind, from which
// the configuration file's [index] keys, the command-line flags, the
// manifest's record, validation and the table in docs/configuration.md all
// come (`pixseek index-params` prints that table).
//
// A parameter is declared once, in its kind's table (src/index/disk_params.cc
// for the disk index); nothing else lists it.
#ifndef PIXSEEK_INDEX_PARAMS_H_
#define PIXSEEK_INDEX_PARAMS_H_

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "pixseek/status.h"

namespace pixseek {

enum class ParamType {
  kInt,     // a whole number (TOML integer)
  kBytes,   // a whole number of bytes (TOML integer)
  kReal,    // a number (TOML integer or float)
  kString,  // one of `choices`
};

// When a parameter takes effect, which decides where it may be given.
enum class ParamPhase {
  // Shapes what is stored (graph degree, vector storage): recorded when the
  // database is created and fixed afterwards. Only `pixseek build` takes it;
  // a different value for an existing database is FailedPrecondition.
  kCreate,
  // Read each time the index opens (RAM budgets, search list): the value at
  // creation is recorded as the database's default, and a value given later
  // applies to that run.
  kOpen,
};

// The commands that offer a parameter as a flag (a bit set). A flag given to
// any other command is an error that says where it has an effect.
enum ParamCommand : unsigned {
  kCmdBuild = 1u << 0,
  kCmdQuery = 1u << 1,
  kCmdEval = 1u << 2,
  kCmdServe = 1u << 3,
  kCmdAdd = 1u << 4,
  kCmdRemove = 1u << 5,
  kCmdCompact = 1u << 6,
};

struct IndexParamSpec {
  const char* name;  // TOML and manifest key; the flag is "--" + name with '-' for '_'
  ParamType type;
  // Allowed range for numbers: [min, max], or (min, max] when min_exclusive.
  double min = 0;
  double max = 0;
  bool min_exclusive = false;
  // Allowed values for strings.
  std::span<const char* const> choices;
  const char* default_value;  // as written in the docs table
  ParamPhase phase;
  unsigned commands;  // ParamCommand bits
  const char* doc;    // one line for --help and the docs table
};

using ParamValue = std::variant<int64_t, double, std::string>;

// The flag that sets `spec` ("--max-degree").
std::string ParamFlag(const IndexParamSpec& spec);
// "build, query, eval and serve".
std::string ParamCommandList(unsigned commands);
// The value as written in TOML and JSON ("64", "1.2", "fp16").
std::string ParamValueText(const ParamValue& value);

// Checks a value's type and range against its spec. InvalidArgument says what
// is allowed ("compact_ratio must be a number in (0, 100], got 0").
Status ValidateParam(const IndexParamSpec& spec, const ParamValue& value);
// ValidateParam, then the value in the spec's own type (an integer given for
// a real parameter becomes a double), as every reader stores it.
Result<ParamValue> CheckParam(const IndexParamSpec& spec, ParamValue value);
// Parses text (a flag's argument) as the spec's type, then checks it.
Result<ParamValue> ParseParam(const IndexParamSpec& spec, std::string_view text);

// Parameter values by name, each with where it came from ("--storage",
// "pixseek.toml:12", "the manifest") for messages. Only set values are held.
class IndexParams {
 public:
  struct Entry {
    ParamValue value;
    std::string source;
  };

  void Set(std::string name, ParamValue value, std::string source);
  bool empty() const { return values_.empty(); }
  const Entry* Find(std::string_view name) const;
  const std::map<std::string, Entry, std::less<>>& values() const { return values_; }

  // Typed reads; `fallback` when unset. The value's type was validated
  // against the spec when it was set through Parse/Validate.
  int64_t Int(std::string_view name, int64_t fallback) const;
  double Real(std::string_view name, double fallback) const;
  std::string String(std::string_view name, const std::string& fallback) const;

  // A JSON object of the values ({"max_degree": 64, "storage": "fp16"}).
  std::string ToJson() const;
  // Reads such an object against `specs`: InvalidArgument for an unknown key
  // or a value of the wrong type or range.
  static Result<IndexParams> FromJson(std::string_view json_text,
                                      std::span<const IndexParamSpec> specs, std::string source);

 private:
  std::map<std::string, Entry, std::less<>> values_;
};

// The spec named `name` in `specs`, or null.
const IndexParamSpec* FindParam(std::span<const IndexParamSpec> specs, std::string_view name);

// Every spec with its default filled in: `recorded` (what a database's
// manifest holds) overlaid by `given` (what the user set for this run).
// A given kCreate parameter that differs from the recorded one of an
// existing database is FailedPrecondition naming the parameter, where it was
// given and the recorded value, when it came from a flag (source "--...") or
// `warnings` is null; from a configuration file (shared by every command and
// database) it is a line in `warnings` and the recorded value stays.
// InvalidArgument for a parameter `specs` lacks (the message names `kind`).
Result<IndexParams> MergeParams(std::string_view kind, std::span<const IndexParamSpec> specs,
                                const IndexParams& recorded, const IndexParams& given,
                                bool existing, std::vector<std::string>* warnings = nullptr);

// The docs table (Markdown) of `specs`, one row a parameter.
std::string ParamsMarkdown(std::span<const IndexParamSpec> specs);

}  // namespace pixseek

#endif  // PIXSEEK_INDEX_PARAMS_H_
