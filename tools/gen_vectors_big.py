#!/usr/bin/python3
"""gen_vectors.py for data sets larger than RAM (e.g. --nbase 10000000 --dim 768).

../shared/tools/gen_vectors.py (beside the checkout, or under $PIXSEEK_SHARED)
draws the whole base into one numpy array before writing it: 30.7 GB at
10M x 768. This tool imports that script as a module, unchanged, and runs its
main() with two module-level substitutions, so that the random draws, their
order and every byte written stay exactly the script's:

  * its `np` is a proxy of numpy whose `empty` returns, for the base and
    query arrays that `draw` allocates (the first and second (n, dim)
    float32 arrays, in that order), an np.memmap onto the payload of
    OUTDIR/base.fbin and OUTDIR/query.fbin (after their 8-byte headers), so
    the vectors are drawn straight into the files and the kernel writes the
    pages back as it needs the RAM;
  * its `write_bin` only writes the 8-byte header and flushes when it is
    handed one of those memmaps for its own file; anything else (gt.ibin is
    written by main() itself) goes through unchanged.

The exact ground truth that main() computes already works in blocks of 50,000
base rows, so reading the memmapped base keeps RAM bounded (about
nquery * 50,000 * 12 bytes). For 10M x 768 it needs about 31 GB of disk for
the base; `pixseek bench gt` computes the same ground truth faster.

Usage: gen_vectors_big.py OUTDIR [the options of gen_vectors.py]
       gen_vectors_big.py --script PATH OUTDIR ...   (another gen_vectors.py)
Needs numpy (Debian: python3-numpy); run with /usr/bin/python3.
"""
import argparse
import importlib.util
import os
import sys

import numpy as np


def find_script(explicit):
    if explicit:
        return explicit
    candidates = []
    if os.environ.get("PIXSEEK_SHARED"):
        candidates.append(os.path.join(os.environ["PIXSEEK_SHARED"], "tools", "gen_vectors.py"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates.append(os.path.join(os.path.dirname(repo), "shared", "tools", "gen_vectors.py"))
    for c in candidates:
        if os.path.isfile(c):
            return c
    sys.exit("gen_vectors_big.py: cannot find gen_vectors.py (tried %s); pass --script PATH"
             % ", ".join(candidates))


def load_module(path):
    spec = importlib.util.spec_from_file_location("gen_vectors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FileBackedNumpy:
    """numpy, except that the first two float32 (n, dim) arrays `empty` makes
    are memmaps onto OUTDIR/base.fbin and OUTDIR/query.fbin."""

    def __init__(self, outdir, dim):
        self._outdir = outdir
        self._dim = dim
        self._files = ["base.fbin", "query.fbin"]
        self.mapped = {}  # file path -> the memmap drawn into it

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float, *args, **kwargs):
        shaped = isinstance(shape, tuple) and len(shape) == 2 and shape[1] == self._dim
        if not (shaped and np.dtype(dtype) == np.float32 and self._files and not args and not kwargs):
            return np.empty(shape, dtype, *args, **kwargs)
        path = os.path.join(self._outdir, self._files.pop(0))
        n = shape[0]
        # The header is written last (write_bin), so a file cut short by a
        # crash never claims rows it does not hold; until then it is zeros.
        with open(path, "wb") as f:
            f.truncate(8 + n * self._dim * 4)
        if n == 0:
            out = np.empty(shape, np.float32)
        else:
            out = np.memmap(path, dtype=np.float32, mode="r+", offset=8, shape=shape)
        self.mapped[os.path.abspath(path)] = out
        return out


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--script")
    ap.add_argument("-h", "--help", action="store_true")
    own, rest = ap.parse_known_args()
    module = load_module(find_script(own.script))
    if own.help:
        print(__doc__)
        sys.argv = [sys.argv[0], "--help"]
        module.main()
        return
    # The output folder and dimension, parsed as gen_vectors.py parses them.
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("outdir")
    peek.add_argument("--dim", type=int, default=2048)
    args, _ = peek.parse_known_args(rest)
    os.makedirs(args.outdir, exist_ok=True)

    fake_np = FileBackedNumpy(args.outdir, args.dim)
    original_write_bin = module.write_bin

    def write_bin(path, x, dtype):
        mapped = fake_np.mapped.get(os.path.abspath(path))
        if mapped is None or x is not mapped:
            return original_write_bin(path, x, dtype)
        if isinstance(x, np.memmap):
            x.flush()
        with open(path, "r+b") as f:
            np.array(x.shape, dtype=np.int32).tofile(f)
        return None

    module.np = fake_np
    module.write_bin = write_bin
    sys.argv = [sys.argv[0]] + rest
    module.main()


if __name__ == "__main__":
    main()
