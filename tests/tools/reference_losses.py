#!/usr/bin/env python3
"""Reference values and gradients of pixseek's metric-learning losses
(src/train/torch/losses.h), computed naively with PyTorch autograd, for
tests/train_losses_test.cc.

Usage: reference_losses.py OUT.json
Writes fixed inputs (seeded) and, for every loss with and without a memory,
the loss value and its gradient with respect to z, in float64. Exits 77 when
torch cannot be imported (the test then skips).
"""
import json
import sys

try:
    import torch
except ImportError as e:  # the test skips on 77
    print(f"torch is not importable: {e}", file=sys.stderr)
    sys.exit(77)


def distance(a, b):
    return torch.linalg.vector_norm(a - b)


def others(z, y, mz, my):
    if mz is None:
        return z, y
    return torch.cat([z, mz]), torch.cat([y, my])


def triplet_terms(z, y, mz, my, margin, q):
    """The hinge values of every valid triplet of query q."""
    zs, ys = others(z, y, mz, my)
    terms = []
    for p in range(len(zs)):
        if p == q or ys[p] != y[q]:
            continue
        dp = distance(z[q], zs[p])
        for n in range(len(zs)):
            if ys[n] == y[q]:
                continue
            terms.append(dp - distance(z[q], zs[n]) + margin)
    return terms


def triplet(z, y, mz, my, margin):
    violating = []
    for q in range(len(z)):
        violating += [t for t in triplet_terms(z, y, mz, my, margin, q) if t.item() > 0]
    if not violating:
        return z.sum() * 0
    return torch.stack(violating).sum() / len(violating)


def triplet_per_query(z, y, mz, my, margin):
    total, queries = z.sum() * 0, 0
    for q in range(len(z)):
        terms = triplet_terms(z, y, mz, my, margin, q)
        if not terms:
            continue  # no valid triplet: not in Q
        queries += 1
        violating = [t for t in terms if t.item() > 0]
        if violating:
            total = total + torch.stack(violating).sum() / len(violating)
    return total / queries if queries else total


def contrastive(z, y, mz, my, beta):
    zs, ys = others(z, y, mz, my)
    total = z.sum() * 0
    for i in range(len(z)):
        for j in range(len(zs)):
            if j == i:
                continue
            s = torch.dot(z[i], zs[j])
            total = total + ((1 - s) if ys[j] == y[i] else torch.clamp(s - beta, min=0))
    return total / len(z)


def koleo(z, eps=1e-8):
    logs = []
    for i in range(len(z)):
        rho = torch.stack([distance(z[i], z[j]) for j in range(len(z)) if j != i]).min()
        logs.append(torch.log(rho + eps))
    return -torch.stack(logs).mean()


def unit_rows(n, d, generator):
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def main():
    g = torch.Generator().manual_seed(20240611)
    n, d = 12, 6
    z = unit_rows(n, d, g)
    # Classes 0..3 three times each, except that class 4 has one row (no
    # positive in the batch: only in the memory) and class 5 one row that
    # has no positive anywhere (no valid triplet).
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5], dtype=torch.int64)
    mz = unit_rows(8, d, g)
    my = torch.tensor([0, 1, 2, 3, 3, 4, 6, 6], dtype=torch.int64)

    losses = {
        "triplet": lambda z, mz, my, m: triplet(z, y, mz, my, m),
        "triplet-per-query": lambda z, mz, my, m: triplet_per_query(z, y, mz, my, m),
        "contrastive": lambda z, mz, my, m: contrastive(z, y, mz, my, m),
    }
    cases = []
    for name, loss in losses.items():
        margins = [0.5] if name == "contrastive" else [0.1, 0.4]
        for margin in margins:
            for memory in (False, True):
                zz = z.clone().requires_grad_(True)
                value = loss(zz, mz if memory else None, my if memory else None, margin)
                value.backward()
                cases.append({"loss": name, "margin": margin, "memory": memory,
                              "value": value.item(), "grad": zz.grad.tolist()})
    zz = z.clone().requires_grad_(True)
    value = koleo(zz)
    value.backward()
    cases.append({"loss": "koleo", "margin": 0, "memory": False,
                  "value": value.item(), "grad": zz.grad.tolist()})

    with open(sys.argv[1], "w") as f:
        json.dump({"z": z.tolist(), "y": y.tolist(), "memory_z": mz.tolist(),
                   "memory_y": my.tolist(), "cases": cases}, f)


if __name__ == "__main__":
    main()
