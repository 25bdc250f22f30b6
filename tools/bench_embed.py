#!/usr/bin/python3
"""The plain Python feature-extraction pipeline `pixseek bench embed` compares
itself with, written the way most users would write it:

  TorchScript cards: PIL + torchvision transforms + torch.jit.load;
  ONNX cards:        cv2.imread + numpy + cv2.dnn.

    tools/bench_embed.py --card CARD.json [--model-file FILE] --images DIR
                         [--threads 2] [--limit N]

Prints one JSON object per line, {"pipeline":"python","stage":S,
"images_per_s":X,...} for S in decode (read + decode), forward (network and
pooling on one preprocessed batch, repeated) and end_to_end (read + decode +
preprocess + forward + pooling, one image after another, batched by the
card's max_batch). Same model, same preprocessing and same thread count as
pixseek's rows.
"""

import argparse
import json
import os
import sys
import time

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(root, limit):
    files = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            if os.path.splitext(n)[1].lower() in IMAGE_EXTS:
                files.append(os.path.join(dirpath, n))
    files.sort()
    return files[:limit] if limit > 0 else files


class TorchPipeline:
    def __init__(self, card, model_file, threads, optimize=False):
        import torch
        from torchvision import transforms as T

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from export_model import pool_features

        self.torch = torch
        torch.set_num_threads(threads)
        self.card = card
        self.model = torch.jit.load(model_file).eval()
        if optimize:  # what pixseek does; not what a plain pipeline does
            self.model = torch.jit.optimize_for_inference(self.model)
        self.pool = lambda y: pool_features(y, card["pooling"], card.get("gem_p", 3.0))
        size = (card["input_height"], card["input_width"])
        steps = ([T.Resize(card["resize_shorter"]), T.CenterCrop(size)]
                 if card["crop"] == "center" else [T.Resize(size)])
        self.transform = T.Compose(steps + [T.ToTensor(), T.Normalize(card["mean"], card["std"])])

    def decode(self, path):
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")

    def preprocess(self, image):
        return self.transform(image)

    def forward(self, tensors):
        with self.torch.inference_mode():
            v = self.pool(self.model(self.torch.stack(tensors)))
            return self.torch.nn.functional.normalize(v, dim=1).numpy()


class OnnxPipeline:
    def __init__(self, card, model_file, threads):
        import cv2
        import numpy as np

        self.cv2, self.np = cv2, np
        cv2.setNumThreads(threads)
        self.card = card
        self.net = cv2.dnn.readNetFromONNX(model_file)
        self.mean = np.array(card["mean"], dtype=np.float32)
        self.std = np.array(card["std"], dtype=np.float32)

    def decode(self, path):
        return self.cv2.imread(path, self.cv2.IMREAD_COLOR)

    def preprocess(self, bgr):
        cv2, np, c = self.cv2, self.np, self.card
        h, w = bgr.shape[:2]
        s = c["resize_shorter"]
        if c["crop"] == "center":
            rw, rh = (s, s * h // w) if w <= h else (s * w // h, s)
            img = cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
            x0, y0 = (rw - c["input_width"]) // 2, (rh - c["input_height"]) // 2
            img = img[y0:y0 + c["input_height"], x0:x0 + c["input_width"]]
        else:
            img = cv2.resize(bgr, (c["input_width"], c["input_height"]))
        if c.get("channel_order", "RGB") == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x = (img.astype(np.float32) * c.get("scale", 1 / 255.0) - self.mean) / self.std
        return x.transpose(2, 0, 1)

    def forward(self, tensors):
        np = self.np
        self.net.setInput(np.ascontiguousarray(np.stack(tensors)))
        layer = self.card.get("output_layer") or ""
        y = self.net.forward(layer) if layer else self.net.forward()
        v = y.reshape(y.shape[0], y.shape[1], -1)
        v = v.max(axis=2) if self.card["pooling"] == "gmp" else v.mean(axis=2)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--card", required=True)
    ap.add_argument("--model-file", help="default: the card's file beside the card")
    ap.add_argument("--images", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--optimize", action="store_true",
                    help="TorchScript: torch.jit.optimize_for_inference, as pixseek does")
    args = ap.parse_args()

    with open(args.card) as f:
        card = json.load(f)
    model_file = args.model_file or os.path.join(os.path.dirname(args.card), card["file"])
    runtime = card.get("runtime", "onnx")
    if runtime == "torchscript":
        pipe = TorchPipeline(card, model_file, args.threads, args.optimize)
    elif runtime == "onnx":
        pipe = OnnxPipeline(card, model_file, args.threads)
    else:
        sys.exit("bench_embed.py: no Python pipeline for runtime " + runtime)
    files = list_images(args.images, args.limit)
    if not files:
        sys.exit("bench_embed.py: no images under " + args.images)
    batch = int(card.get("max_batch", 16))

    def row(stage, seconds):
        print(json.dumps({"pipeline": "python-optimized" if args.optimize else "python",
                          "stage": stage,
                          "images_per_s": round(len(files) / seconds, 2),
                          "images": len(files), "threads": args.threads,
                          "model": card.get("name", "")}), flush=True)

    start = time.perf_counter()
    for p in files:
        pipe.decode(p)
    row("decode", time.perf_counter() - start)

    first = [pipe.preprocess(pipe.decode(p)) for p in files[:batch]]
    for _ in range(2):  # warm-up, as pixseek's rows
        pipe.forward(first)
    start = time.perf_counter()
    for done in range(0, len(files), len(first)):
        pipe.forward(first[:min(len(first), len(files) - done)])
    row("forward", time.perf_counter() - start)

    start = time.perf_counter()
    pending = []
    for p in files:
        image = pipe.decode(p)
        if image is None:  # cv2.imread's answer to an unreadable file
            continue
        pending.append(pipe.preprocess(image))
        if len(pending) == batch:
            pipe.forward(pending)
            pending = []
    if pending:
        pipe.forward(pending)
    row("end_to_end", time.perf_counter() - start)


if __name__ == "__main__":
    main()
