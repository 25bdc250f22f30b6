#!/usr/bin/python3
"""Exports a torchvision backbone as TorchScript plus its pixseek model card.

    tools/export_model.py resnet50|vit_b_16|tiny_cnn|tiny_vit --out DIR
        [--pooling gap|gem|cls|mean_tokens] [--learnable-gem]
        [--weights pretrained|random] [--reference IMAGE]

The TorchScript file outputs the features *before* pooling (ResNet-50: the
last conv map N x 2048 x 7 x 7; ViT-B/16: the token sequence N x 197 x 768
after the final LayerNorm), and the card tells pixseek how to pool them, so
one export serves every pooling. With --learnable-gem the GeM layer (p a
parameter, initialised to --gem-p) is part of the module, which outputs N x D,
and the card says pooling "none".

Writes DIR/<name>.pt and DIR/<name>.pt.json (the card), which
`pixseek model import DIR/<name>.pt` picks up. Pretrained weights come from
torchvision's download cache; when they cannot be downloaded (no network) the
export falls back to random weights with a warning (--weights random forces
it; the card name then ends in "-random" so a database never mixes them up).

tiny_cnn and tiny_vit are small random-weight models for tests (exported in a
second). --reference IMAGE also writes DIR/<name>.pt.reference.json: the
vector this script computes for IMAGE with torchvision's own transforms and
the card's pooling, which the C++ embedder must reproduce.

Runs with Debian's python3-torch and python3-torchvision; nothing from pip.
"""

import argparse
import hashlib
import json
import os
import sys
import warnings

import torch
import torch.nn as nn
import torchvision

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
GEM_EPS = 1e-6


class ConvFeatures(nn.Module):
    """A CNN up to its last conv map (drops avgpool and fc)."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


class VitTokens(nn.Module):
    """A torchvision VisionTransformer up to the token sequence after the final
    LayerNorm (class token first), i.e. before the head picks token 0."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        x = self.vit._process_input(x)
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        return self.vit.encoder(torch.cat([cls, x], dim=1))


class GeM(nn.Module):
    """Generalised mean pooling with a learnable exponent p, over H x W of an
    NCHW map or over the patch tokens (all but the first) of N x T x D."""

    def __init__(self, p):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([float(p)]))

    def forward(self, x):
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)  # N x HW x C
        else:
            x = x[:, 1:, :]
        return x.clamp(min=GEM_EPS).pow(self.p).mean(dim=1).pow(1.0 / self.p)


class WithPool(nn.Module):
    def __init__(self, features, pool):
        super().__init__()
        self.features = features
        self.pool = pool

    def forward(self, x):
        return self.pool(self.features(x))


def pool_features(y, pooling, gem_p=3.0):
    """The card's pooling, as the C++ embedder does it (reference)."""
    if pooling == "none":
        return y.flatten(1)
    if pooling in ("gap", "gmp", "gem"):
        if y.dim() == 4:
            tokens = y.flatten(2).transpose(1, 2)
        elif y.dim() == 3 and pooling == "gem":
            tokens = y[:, 1:, :]
        else:
            raise ValueError("pooling %s needs an N x C x H x W output" % pooling)
        if pooling == "gap":
            return tokens.mean(dim=1)
        if pooling == "gmp":
            return tokens.amax(dim=1)
        return tokens.clamp(min=GEM_EPS).pow(gem_p).mean(dim=1).pow(1.0 / gem_p)
    if y.dim() != 3:
        raise ValueError("pooling %s needs an N x T x D output" % pooling)
    if pooling == "cls":
        return y[:, 0, :]
    if pooling == "mean_tokens":
        return y[:, 1:, :].mean(dim=1)
    raise ValueError("unknown pooling " + pooling)


def l2_normalize(v):
    return torch.nn.functional.normalize(v, p=2.0, dim=1, eps=0.0).nan_to_num(0.0)


def transform_for(card):
    """torchvision transforms equivalent to the card's preprocessing."""
    from torchvision import transforms as T

    interp = {
        "bilinear": T.InterpolationMode.BILINEAR,
        "bicubic": T.InterpolationMode.BICUBIC,
    }.get(card["interpolation"], T.InterpolationMode.BILINEAR)
    size = (card["input_height"], card["input_width"])
    if card["crop"] == "center":
        steps = [T.Resize(card["resize_shorter"], interpolation=interp), T.CenterCrop(size)]
    else:
        steps = [T.Resize(size, interpolation=interp)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(card["mean"], card["std"])])


def load_pretrained(arch):
    """torchvision's pretrained model, or None (with a warning) when the
    weights cannot be downloaded."""
    try:
        if arch == "resnet50":
            return torchvision.models.resnet50(weights="IMAGENET1K_V2")
        return torchvision.models.vit_b_16(weights="IMAGENET1K_V1")
    except Exception as e:  # no network, proxy, checksum...: any failure
        warnings.warn(
            "could not download pretrained %s weights (%s); exporting RANDOM weights, "
            "useful for speed tests only" % (arch, str(e).splitlines()[0] if str(e) else e))
        return None


def build(arch, weights):
    """(feature module, card fields, pretrained?) for `arch`."""
    torch.manual_seed(0)
    card = {
        "input_width": 224, "input_height": 224, "resize_shorter": 256,
        "crop": "center", "interpolation": "bilinear", "scale": 1.0 / 255.0,
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "channel_order": "RGB",
    }
    pretrained = False
    if arch in ("resnet50", "vit_b_16"):
        model = load_pretrained(arch) if weights == "pretrained" else None
        pretrained = model is not None
        if model is None:
            model = getattr(torchvision.models, arch)(weights=None)
        if arch == "resnet50":
            return ConvFeatures(nn.Sequential(*list(model.children())[:-2])), card, pretrained
        return VitTokens(model), card, pretrained
    # Test models: small inputs, random weights, exported in about a second.
    card.update({"input_width": 32, "input_height": 32, "resize_shorter": 36})
    if arch == "tiny_cnn":
        body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())  # N x 16 x 8 x 8
        return ConvFeatures(body), card, False
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64)  # tokens: N x 17 x 32
    return VitTokens(vit), card, False


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arch", choices=["resnet50", "vit_b_16", "tiny_cnn", "tiny_vit"])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--pooling", choices=["gap", "gmp", "gem", "cls", "mean_tokens"],
                    help="default: gap for CNNs, cls for ViTs")
    ap.add_argument("--gem-p", type=float, default=3.0, help="GeM exponent (default 3)")
    ap.add_argument("--learnable-gem", action="store_true",
                    help="put GeM with a learnable p inside the module (card pooling none)")
    ap.add_argument("--weights", choices=["pretrained", "random"], default="pretrained")
    ap.add_argument("--name", help="model name in the card (default from arch and pooling)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--reference", metavar="IMAGE",
                    help="also write the expected vector for IMAGE (<file>.reference.json)")
    args = ap.parse_args()

    is_vit = args.arch in ("vit_b_16", "tiny_vit")
    pooling = args.pooling or ("cls" if is_vit else "gap")
    if not is_vit and pooling in ("cls", "mean_tokens"):
        ap.error("pooling %s needs a token sequence (a ViT)" % pooling)
    if is_vit and pooling in ("gap", "gmp"):
        ap.error("pooling %s needs a conv map (a CNN); use cls, mean_tokens or gem" % pooling)
    if args.learnable_gem and pooling != "gem":
        ap.error("--learnable-gem goes with --pooling gem")

    features, card, pretrained = build(args.arch, args.weights)
    module = WithPool(features, GeM(args.gem_p)) if args.learnable_gem else features
    module.eval()

    name = args.name
    if not name:
        name = args.arch
        if pooling != ("cls" if is_vit else "gap"):
            name += "-" + pooling
        if args.learnable_gem:
            name += "-learned"
        if not pretrained and args.arch in ("resnet50", "vit_b_16"):
            name += "-random"

    example = torch.zeros(1, 3, card["input_height"], card["input_width"])
    # ViT's input-size assert becomes a constant in the trace: the card fixes
    # the input size, so the warning says nothing the user must act on.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
        y = traced(example)
    card_pooling = "none" if args.learnable_gem else pooling
    dimension = int(pool_features(y, card_pooling, args.gem_p).shape[1])

    os.makedirs(args.out, exist_ok=True)
    file_name = name + ".pt"
    model_path = os.path.join(args.out, file_name)
    traced.save(model_path)
    card.update({
        "name": name,
        "runtime": "torchscript",
        "file": file_name,
        "sha256": sha256_of(model_path),
        "pooling": card_pooling,
        "gem_p": args.gem_p,
        "dimension": dimension,
        "l2_normalize": True,
        "max_batch": args.max_batch,
    })
    card_path = model_path + ".json"
    with open(card_path, "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")

    if args.reference:
        from PIL import Image

        with Image.open(args.reference) as im:
            x = transform_for(card)(im.convert("RGB")).unsqueeze(0)
        loaded = torch.jit.load(model_path)
        with torch.no_grad():
            v = l2_normalize(pool_features(loaded(x), card_pooling, args.gem_p))
        with open(model_path + ".reference.json", "w") as f:
            json.dump({"image": os.path.abspath(args.reference),
                       "vector": [float(t) for t in v[0]]}, f)

    print(json.dumps({"model": os.path.abspath(model_path), "card": os.path.abspath(card_path),
                      "name": name, "dimension": dimension, "pooling": card_pooling,
                      "pretrained": pretrained, "output_shape": list(y.shape)}))


if __name__ == "__main__":
    main()
