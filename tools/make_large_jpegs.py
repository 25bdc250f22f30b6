#!/usr/bin/python3
"""Writes a folder of large JPEGs (default 3000x2000, quality 90) for the
feature-extraction benchmark (`pixseek bench embed --images OUT`), made from
real photos: each source image is resized to the target size and given fine
grain, so that, like a camera's photo, it has detail at every scale and does
not compress to almost nothing.

Usage: make_large_jpegs.py SRC_DIR OUT_DIR [--count 100] [--size 3000x2000]
       [--quality 90]
Needs python3-opencv and python3-numpy (Debian).
"""
import argparse
import os
import sys

import cv2
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--size", default="3000x2000")
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    sources = sorted(
        os.path.join(d, f) for d, _, files in os.walk(args.src) for f in files
        if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not sources:
        sys.exit(f"no images under {args.src}")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(1)
    step = max(1, len(sources) // args.count)
    written = 0
    for path in sources[::step][:args.count]:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            continue
        big = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        big += rng.normal(0, 6, big.shape).astype(np.int16)
        big = np.clip(big, 0, 255).astype(np.uint8)
        name = os.path.join(args.out, f"large_{written:04d}.jpg")
        cv2.imwrite(name, big, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
        written += 1
    print(f"wrote {written} images of {width}x{height} to {args.out}")


if __name__ == "__main__":
    main()
