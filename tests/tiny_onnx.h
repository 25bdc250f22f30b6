// A tiny real ONNX network, encoded by hand at test time so that tests need
// neither Python nor a downloaded model: Conv(8x8, stride 8) -> Relu ->
// GlobalAveragePool, input "input" float [N,3,224,224], output "features"
// [N,out_channels,1,1]. Its features depend on the image (colour and layout),
// so retrieval tests on it are meaningful, if crude.
#ifndef PIXSEEK_TESTS_TINY_ONNX_H_
#define PIXSEEK_TESTS_TINY_ONNX_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "pixseek/status.h"

namespace pixseek::testing {

// The serialised ModelProto (ir_version 7, opset 12). The conv weights are
// pseudo-random in [-1, 1] from `seed`: the same seed gives the same bytes.
std::vector<uint8_t> MakeTinyOnnxModel(int out_channels, uint32_t seed);

// A model card (JSON) for that network stored as `file`: runtime onnx,
// input 224x224, resize_shorter 224, centre crop, GAP, dimension out_channels.
std::string TinyModelCardJson(int out_channels, const std::string& file);

// Writes that network and its card into `scratch` and imports them into the
// model registry at `home` as model `name` (what most database tests start
// with).
Status InstallTinyModel(const std::filesystem::path& home, const std::filesystem::path& scratch,
                        int out_channels, uint32_t seed, const std::string& name = "tiny");

}  // namespace pixseek::testing

#endif  // PIXSEEK_TESTS_TINY_ONNX_H_
