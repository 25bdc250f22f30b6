// What a "block" of a network is, for fine-tuning only the last few
// (TrainBackbone, trainable_blocks). Pure string logic on the names of
// named_parameters(); no libtorch here. Part of the plugin pixseek_train.so.
#ifndef PIXSEEK_TRAIN_TORCH_BACKBONE_BLOCKS_H_
#define PIXSEEK_TRAIN_TORCH_BACKBONE_BLOCKS_H_

#include <cstddef>
#include <string>
#include <vector>

namespace pixseek::train {

// One block: a name for messages ("layer4.1") and the positions of its
// parameters in the list GroupIntoBlocks was given.
struct ParameterBlock {
  std::string name;
  std::vector<size_t> parameters;
};

// Groups parameter names, in the order the module lists them, into blocks:
//   - the components every name shares are dropped (export wrappers such as
//     "body." or "vit.");
//   - a name's block is the module path up to its first indexed component
//     (all digits, or "<word>_<digits>"), or up to the second one when that
//     too is a digit and names a module with sub-modules below it: a stage
//     of residual blocks is split into the blocks. Without an indexed
//     component, the block is the module that owns the parameter;
//   - consecutive names with the same block form one group, and groups after
//     the last indexed block (a final norm layer, a head, a learnable GeM p)
//     join that block: they only make sense trained with it.
// So for ResNet a block is a residual block, "layer4.2" (or "7.2" when the
// export is an nn.Sequential of the children); for a torchvision ViT an
// encoder layer, "encoder.layers.encoder_layer_11" (the last one with the
// final "encoder.ln"); for MobileNetV2 an inverted residual, "features.17";
// a network without numbered modules has one block per parameterised layer.
std::vector<ParameterBlock> GroupIntoBlocks(const std::vector<std::string>& names);

}  // namespace pixseek::train

#endif  // PIXSEEK_TRAIN_TORCH_BACKBONE_BLOCKS_H_
