// Requests the server tests make again and again: a synthetic picture, and
// its upload or search as the web page sends them (multipart, field "image").
#ifndef PIXSEEK_TESTS_API_REQUESTS_H_
#define PIXSEEK_TESTS_API_REQUESTS_H_

#include <httplib.h>

#include <cstdint>
#include <string>

#include "test_images.h"

namespace pixseek::testing {

// A 96 x 96 PNG that differs with `seed` (distinct features for distinct seeds).
inline std::string SeededPicture(uint32_t seed) {
  auto bytes = SyntheticImage(".png", 96, 96, 40 + seed % 200, 90, 160, seed);
  return std::string(bytes.begin(), bytes.end());
}

inline httplib::Result UploadPicture(httplib::Client& client, const std::string& bytes) {
  return client.Post("/api/v1/images",
                     httplib::MultipartFormDataItems{{"image", bytes, "u.png", "image/png"}});
}

inline httplib::Result SearchPicture(httplib::Client& client, const std::string& bytes) {
  return client.Post("/api/v1/search",
                     httplib::MultipartFormDataItems{{"image", bytes, "q.png", "image/png"}});
}

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_API_REQUESTS_H_
