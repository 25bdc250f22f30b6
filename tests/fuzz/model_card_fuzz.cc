// libFuzzer target for model cards: any text must parse into a valid card
// (which then round-trips through ToJson) or give InvalidArgument.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "pixseek/embedder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto card = pixseek::ModelCard::FromJson(text);
  if (card.ok()) {
    if (!card->Validate().ok()) std::abort();
    auto again = pixseek::ModelCard::FromJson(card->ToJson());
    if (!again.ok() || again->ToJson() != card->ToJson()) std::abort();
  } else if (card.status().code() != pixseek::StatusCode::kInvalidArgument) {
    std::abort();
  }
  return 0;
}
