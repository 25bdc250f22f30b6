// Content hashing (SHA-256 through OpenSSL).
#ifndef PIXSEEK_CORE_HASH_H_
#define PIXSEEK_CORE_HASH_H_

#include <cstdint>
#include <span>
#include <string>

namespace pixseek {

// Lower-case hex SHA-256 of `bytes`.
std::string Sha256Hex(std::span<const uint8_t> bytes);

// Lower-case hex of `bytes`.
std::string ToHex(std::span<const uint8_t> bytes);

// Compares two strings in time independent of where they differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b);

}  // namespace pixseek

#endif  // PIXSEEK_CORE_HASH_H_
