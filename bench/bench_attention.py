"""Document-masked attention at long context: memory and time of one forward + backward pass.

Peer: the dense boolean mask ``[b, 1, L, L]`` (causal and same-document) through
``F.scaled_dot_product_attention`` (what the model used before). Ours: variable-length SDPA by
document (``varlen``, any device) and FlexAttention block masks (``flex``, CUDA only), both from
``trainer/attention.py``. Each case runs in a fresh subprocess so its peak memory is its own:
CPU peak RSS growth over the process after set-up (``ru_maxrss``), CUDA ``max_memory_allocated``.

A row of ``L`` tokens is packed with documents of log-normal length (median ``--median`` of ``L``,
default a quarter, the way a long-context phase packs them); one row (batch 1), ``--heads`` heads of ``--head-dim``. With
``--step`` it also times a whole training step of the model (``Decoder``, ``--layers`` layers of
width ``heads * head_dim``, forward, backward and AdamW) with our kernel.

    python bench/bench_attention.py [--lengths 8192 32768] [--device cpu|cuda] [--kernels dense varlen flex] [--step]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(
    kernel: str, length: int, device: str, heads: int, head_dim: int, repeats: int, layers: int = 2, median: float = 0.25
) -> dict:
    """One kernel at one length, in this process: peak memory and seconds per forward + backward."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from midmix.trainer.attention import DocumentLayout

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = []
    while sum(lengths) < length:
        lengths.append(max(1, int(rng.lognormal(np.log(length * median), 0.8))))
    lengths[-1] -= sum(lengths) - length
    doc_ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None].to(device)
    q, k, v = (torch.randn(1, heads, length, head_dim, device=device, requires_grad=True) for _ in range(3))
    if device == "cuda":
        q, k, v = (t.detach().to(torch.bfloat16).requires_grad_() for t in (q, k, v))

    if kernel.startswith("step-"):
        from midmix.trainer.model import Decoder, ModelConfig

        config = ModelConfig(vocab_size=257, d_model=heads * head_dim, n_heads=heads, n_layers=layers,
                             max_seq_len=length, attention=kernel.removeprefix("step-"))  # fmt: skip
        model = Decoder(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, 257, (1, length), device=device)
        positions = torch.cat([torch.arange(n) for n in lengths])[None].to(device)

    def step() -> None:
        if kernel.startswith("step-"):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(ids, positions, doc_ids)
            F.cross_entropy(logits.float().view(-1, 257), ids.view(-1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return
        if kernel == "dense":
            causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
            mask = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        else:
            out = DocumentLayout.build(doc_ids, kernel).attend(q, k, v)
        out.float().square().mean().backward()

    # ru_maxrss is a high-water mark: take the CPU base before the first pass. On CUDA the first
    # pass compiles flex, so take the peak over the timed passes only.
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"kernel": kernel, "length": length, "device": device, "documents": len(lengths),
            "seconds": (time.perf_counter() - started) / repeats, "peak_bytes": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--kernels", nargs="+", default=None, help="default: dense varlen (+ flex on cuda)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step", action="store_true", help="also time a whole model training step with our kernel")
    parser.add_argument("--layers", type=int, default=2, help="model layers for --step")
    parser.add_argument("--median", type=float, default=0.25, help="median document length as a fraction of L")
    parser.add_argument("--max-dense", type=int, default=16384, help="longest L for the dense peer (its mask is L^2 bytes)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kernel, length = args.case.split(":")
        print(json.dumps(run_case(kernel, int(length), args.device, args.heads, args.head_dim, args.repeats, args.layers,
                                  args.median)))  # fmt: skip
        return
    kernels = args.kernels or (["dense", "varlen", "flex"] if args.device == "cuda" else ["dense", "varlen"])
    if args.step:
        kernels = kernels + ["step-flex" if args.device == "cuda" else "step-varlen"]
    print(f"device {args.device}, batch 1, {args.heads} heads x {args.head_dim}, documents of median {args.median:g} L, "
          f"forward + backward, mean of {args.repeats}")
    results = {}
    for length in args.lengths:
        for kernel in kernels:
            if kernel == "dense" and length > args.max_dense:
                print(f"  L={length:6d} {kernel:7s} not run: its mask alone is {length * length / 2**30:.1f} GiB (--max-dense)")
                continue
            command = [sys.executable, __file__, "--case", f"{kernel}:{length}", "--device", args.device,
                       "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--repeats", str(args.repeats),
                       "--layers", str(args.layers), "--median", str(args.median)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"  L={length:6d} {kernel:7s} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[(kernel, length)] = result
            print(f"  L={length:6d} {kernel:11s} {result['documents']:3d} docs  {result['seconds'] * 1e3:9.1f} ms  "
                  f"peak +{result['peak_bytes'] / 2**20:9.1f} MiB")
    for length in args.lengths:
        dense = results.get(("dense", length))
        for kernel in kernels:
            ours = results.get((kernel, length))
            if dense and ours and kernel in ("varlen", "flex"):
                print(f"  L={length}: {kernel} / dense: memory {ours['peak_bytes'] / max(dense['peak_bytes'], 1):.3f}x, "
                      f"time {ours['seconds'] / dense['seconds']:.2f}x")


if __name__ == "__main__":
    main()
