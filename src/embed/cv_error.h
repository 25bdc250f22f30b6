// OpenCV's own description of an error, for the embed module's files that
// call OpenCV and turn its exceptions into a Status. Internal to the module.
#ifndef PIXSEEK_EMBED_CV_ERROR_H_
#define PIXSEEK_EMBED_CV_ERROR_H_

#include <cctype>
#include <string>

#include <opencv2/core.hpp>

namespace pixseek {

// The message of `e` without its trailing "\n> " noise.
inline std::string CvMessage(const cv::Exception& e) {
  std::string m = e.err.empty() ? e.msg : e.err;
  while (!m.empty() && (std::isspace(static_cast<unsigned char>(m.back())) || m.back() == '>')) {
    m.pop_back();
  }
  return m;
}

}  // namespace pixseek

#endif  // PIXSEEK_EMBED_CV_ERROR_H_
