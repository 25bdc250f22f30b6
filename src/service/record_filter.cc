// Reading and checking a search's RecordFilter (QueryParams::filter) and the
// part of the result cache's key that it sets.
#include "service/record_filter.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "pixseek/image.h"
#include "pixseek/services.h"
#include "service/category.h"

namespace pixseek {
namespace {

constexpr ImageFormat kFormats[] = {ImageFormat::kJpeg, ImageFormat::kPng,  ImageFormat::kWebp,
                                     ImageFormat::kBmp,  ImageFormat::kTiff, ImageFormat::kGif};

Status BadTime(std::string_view text) {
  return Status::InvalidArgument("'" + std::string(text) +
                                 "' is not a time: write unix seconds, 2026-12-01 or "
                                 "2026-12-01T08:30:00Z (UTC)");
}

}  // namespace

Result<int64_t> ParseFilterTime(std::string_view text) {
  int64_t unix_seconds = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), unix_seconds);
  if (ec == std::errc() && end == text.data() + text.size()) return unix_seconds;
  // YYYY-MM-DD, then optionally THH:MM:SS and Z.
  const std::string s(text);
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, used = 0;
  if (s.size() == 10) {
    if (std::sscanf(s.c_str(), "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10) {
      return BadTime(text);
    }
  } else if (s.size() == 19 || (s.size() == 20 && s.back() == 'Z')) {
    if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) !=
            6 ||
        used != 19) {
      return BadTime(text);
    }
  } else {
    return BadTime(text);
  }
  using namespace std::chrono;
  const year_month_day date{year(y), month(static_cast<unsigned>(mo)),
                            day(static_cast<unsigned>(d))};
  if (!date.ok() || h > 23 || mi > 59 || sec > 59 || h < 0 || mi < 0 || sec < 0) {
    return BadTime(text);
  }
  const sys_seconds time = sys_days(date) + hours(h) + minutes(mi) + seconds(sec);
  return static_cast<int64_t>(time.time_since_epoch().count());
}

Result<std::string> ParseFilterFormat(std::string_view text) {
  std::string name(text);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (name == "jpg") name = "jpeg";
  if (name == "tif") name = "tiff";
  std::string known;
  for (ImageFormat format : kFormats) {
    if (ImageFormatName(format) == name) return name;
    known += (known.empty() ? "" : ", ") + std::string(ImageFormatName(format));
  }
  return Status::InvalidArgument("unknown image format '" + std::string(text) + "': one of " +
                                 known);
}

Status ValidateRecordFilter(const RecordFilter& filter) {
  if (filter.label) PIXSEEK_RETURN_IF_ERROR(ValidateCategory(*filter.label));
  if (filter.format) PIXSEEK_RETURN_IF_ERROR(ParseFilterFormat(*filter.format).status());
  if (filter.min_width < 0 || filter.min_height < 0) {
    return Status::InvalidArgument("min_width and min_height must not be negative");
  }
  if (filter.added_after && filter.added_before && *filter.added_after >= *filter.added_before) {
    return Status::InvalidArgument("added_after must be earlier than added_before");
  }
  return Status::Ok();
}

std::string RecordFilterKey(const RecordFilter& filter) {
  if (filter.empty()) return "";
  nlohmann::json j = nlohmann::json::object();
  if (filter.label) j["l"] = *filter.label;
  if (filter.added_after) j["a"] = *filter.added_after;
  if (filter.added_before) j["b"] = *filter.added_before;
  if (filter.format) j["f"] = *filter.format;
  if (filter.min_width > 0) j["w"] = filter.min_width;
  if (filter.min_height > 0) j["h"] = filter.min_height;
  // Invalid UTF-8 in a label (SQLite stores any bytes) must not throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace pixseek
