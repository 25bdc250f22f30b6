#!/usr/bin/env python3
"""Checks the module layering that src/README.md describes, from the
#include lines:

- dependencies flow one way: a module includes only the public headers
  (include/pixseek/) of the modules below it;
- a module's own headers (src/<module>/*.h) are private to it: another module
  includes them only where ALLOWED below says why;
- the public headers never include a private one.

Run by ctest (label fast); prints every violation and exits 1 on any.
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
SRC = os.path.join(ROOT, "src")
PUBLIC = os.path.join(ROOT, "include", "pixseek")

# What each module may depend on (transitively closed below).
DEPENDS = {
    "core": [],
    "image": ["core"],
    "cache": ["core"],
    "store": ["core"],
    "index": ["core"],
    "embed": ["image"],
    "train": ["embed", "index"],
    "service": ["train", "embed", "index", "store", "cache", "image"],
    "server": ["service"],
    # The configuration reads the option structs of the layers it configures.
    "config": ["server", "service"],
    "bench_ann": ["index"],
    "bench_embed": ["service"],
    "cli": ["server", "service", "config", "bench_ann", "bench_embed"],
}

# The module whose code implements each public header.
OWNER = {
    "status.h": "core",
    "image.h": "image",
    "cache.h": "cache",
    "metadata_store.h": "store",
    "vector_index.h": "index",
    "disk_index.h": "index",
    "index_params.h": "index",
    "embedder.h": "embed",
    "model_registry.h": "embed",
    "feature_fit.h": "embed",
    "trained_head.h": "embed",
    "embedding_engine.h": "embed",
    "train.h": "train",
    "database.h": "service",
    "services.h": "service",
    "database_check.h": "service",
    "migrate.h": "service",
    "train_service.h": "service",
    "server.h": "server",
    "config.h": "config",
}

# Private headers another module may include, and why.
ALLOWED = {
    # The benchmark harness measures the disk graph and reads .fbin files
    # with the index's own reader: it is a white-box client of the index.
    ("bench_ann", "index/disk_graph.h"),
    ("bench_ann", "index/vecs_io.h"),
    ("bench_ann", "index/storage_kernels.h"),
    ("bench_ann", "index/vamana.h"),
    # TrainPq learns the disk index's PQ codebooks with the index's own
    # ProductQuantizer::Train and returns them as the bytes its Save writes.
    ("train", "index/pq.h"),
    # TrainBackbone (plugin pixseek_train.so) must feed the network exactly
    # what the embedders feed it, and reads ONNX models through their
    # ONNX -> TorchScript translation; the plugin compiles both .cc files.
    ("train", "embed/preprocess.h"),
    ("train", "embed/onnx_to_torchscript.h"),
    # The CLI runs the benchmarks through their harness headers.
    ("cli", "bench_ann/ann_bench.h"),
    ("cli", "bench_ann/ground_truth.h"),  # `pixseek bench gt`
    ("cli", "bench_embed/embed_bench.h"),
}


def closure(module, seen=None):
    seen = set() if seen is None else seen
    for dep in DEPENDS.get(module, []):
        if dep not in seen:
            seen.add(dep)
            closure(dep, seen)
    seen.add("core")
    return seen


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def includes(path):
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield number, m.group(1)


def main():
    problems = []
    modules = sorted(d for d in os.listdir(SRC) if os.path.isdir(os.path.join(SRC, d)))
    for module in modules:
        if module not in DEPENDS:
            problems.append(f"src/{module}: a module missing from DEPENDS in {__file__}")
            continue
        allowed = closure(module) | {module}
        for dirpath, _, files in os.walk(os.path.join(SRC, module)):
            for name in files:
                if not name.endswith((".h", ".cc")):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)
                for number, inc in includes(path):
                    head, _, rest = inc.partition("/")
                    if head == "pixseek":
                        owner = OWNER.get(rest)
                        if owner is None:
                            problems.append(f"{rel}:{number}: {inc} has no owner in OWNER")
                        elif owner not in allowed:
                            problems.append(f"{rel}:{number}: {module} includes {inc}, "
                                            f"which belongs to {owner} (not below {module})")
                    elif head in DEPENDS and head not in (module, "core"):
                        if (module, inc) not in ALLOWED:
                            problems.append(f"{rel}:{number}: {module} includes {inc}, a "
                                            f"header private to {head}")
    for name in sorted(os.listdir(PUBLIC)):
        for number, inc in includes(os.path.join(PUBLIC, name)):
            if not inc.startswith("pixseek/"):
                problems.append(f"include/pixseek/{name}:{number}: a public header includes "
                                f"the private {inc}")
    for problem in problems:
        print(problem)
    print(f"{len(problems)} layering problems" if problems else "layering: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
