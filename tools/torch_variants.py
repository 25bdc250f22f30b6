#!/usr/bin/python3
"""Forward-pass rate of a TorchScript model under the CPU options the
feature-extraction issue asks about, on random input, in one process:
frozen + optimize_for_inference (what pixseek does) against channels-last
input, bf16 autocast, and other thread counts. Prints one JSON row each.

Usage: torch_variants.py MODEL.pt [--batch 8] [--seconds 8] [--size 224]
Needs python3-torch (Debian); run with /usr/bin/python3.
"""
import argparse
import json
import time

import torch


def rate(fn, x, seconds):
    fn(x)  # warm-up (and oneDNN kernel selection)
    n, start = 0, time.time()
    while time.time() - start < seconds:
        fn(x)
        n += x.shape[0]
    return n / (time.time() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    x = torch.rand(args.batch, 3, args.size, args.size)
    loaded = torch.jit.load(args.model).eval()
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(loaded))
    with torch.inference_mode():
        ref = frozen(x).float()

        def report(name, fn, inp, threads=2):
            torch.set_num_threads(threads)
            out = fn(inp).float()
            err = ((out - ref).norm() / ref.norm()).item()
            print(json.dumps({"variant": name, "threads": threads, "batch": args.batch,
                              "images_per_s": round(rate(fn, inp, args.seconds), 2),
                              "rel_error_vs_fp32": round(err, 5)}), flush=True)

        report("fp32 frozen + optimize_for_inference (pixseek)", frozen, x)
        report("same, 1 thread", frozen, x, threads=1)
        report("fp32 as loaded (no freezing)", loaded, x)
        report("channels-last input", frozen, x.contiguous(memory_format=torch.channels_last))
        cl_model = torch.jit.load(args.model).eval().to(memory_format=torch.channels_last)
        cl_frozen = torch.jit.optimize_for_inference(torch.jit.freeze(cl_model))
        report("channels-last model and input", cl_frozen,
               x.contiguous(memory_format=torch.channels_last))

        def bf16(inp):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return loaded(inp)
        report("bf16 autocast (unfrozen)", bf16, x)


if __name__ == "__main__":
    main()
