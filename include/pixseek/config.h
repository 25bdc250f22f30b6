// pixseek's configuration: one TOML file, then environment variables, then
// command-line flags, each overriding the ones before. Every command reads
// the same configuration, so a database built with its metadata in MariaDB is
// served from MariaDB too. docs/configuration.md lists every key.
#ifndef PIXSEEK_CONFIG_H_
#define PIXSEEK_CONFIG_H_

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "pixseek/database.h"
#include "pixseek/server.h"
#include "pixseek/status.h"

namespace pixseek {

struct Config {
  // [database] and [index] sections.
  DatabaseOptions database;
  // [server] section.
  ServerOptions server;
};

// Reads a TOML file into `config`: keys present replace the values there,
// absent ones leave them. Errors (InvalidArgument) name the file, the line
// and the key: a syntax error, a value of the wrong type or range, an unknown
// section or key (a misspelt key must not be silently ignored). NotFound when
// the file does not exist.
Status LoadConfigFile(const std::filesystem::path& file, Config& config);

// Reads the environment into `config`:
//   PIXSEEK_DB            database directory
//   PIXSEEK_MODEL         model name
//   PIXSEEK_HOME          where models live
//   PIXSEEK_METADATA_URL  sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB
//   PIXSEEK_VECTOR_URL    milvus://[USER:PASS@]HOST:PORT/COLLECTION (vectors on a
//                         server; empty = the index in the database directory)
//   PIXSEEK_CACHE_URL     memory:// or redis://[:PASS@]HOST:PORT/N
//   PIXSEEK_API_KEYS      comma-separated API keys
//   PIXSEEK_HOST, PIXSEEK_PORT  the server's address
// `getenv` is std::getenv in the program, a map in tests. InvalidArgument
// names the variable with a bad value.
using GetEnv = std::function<std::optional<std::string>(const char* name)>;
Status ApplyEnvironment(Config& config, const GetEnv& getenv);
GetEnv ProcessEnvironment();

// The config file named by "--config FILE" / "--config=FILE" in argv, else
// by $PIXSEEK_CONFIG; nullopt when neither is given.
std::optional<std::filesystem::path> ConfigFileFromArgs(int argc, const char* const* argv,
                                                        const GetEnv& getenv);

}  // namespace pixseek

#endif  // PIXSEEK_CONFIG_H_
