"""The CUDA path for real, in one table: training steps, an artifact on the GPU, a loaded model's latency.

    python benchmarks/gpu.py                    # one GPU, under 8 minutes (an H100-class GPU: ~4)
    python benchmarks/gpu.py --no-compile       # skip the torch.compile rows (the slow part)
    python benchmarks/gpu.py --json out.json    # also write the figures as JSON

What it runs (every figure is a median over timed repetitions after warm-up, CUDA-synchronized):

1. Training steps of conv6 (3x32x32, batch 256) and resnet50 (3x224x224, batch 64): edge-popup
   (density 0.5 / 0.3) and dense training of the same architecture, with AMP (bf16 where
   supported, else fp16 + GradScaler) and channels_last, eager and torch.compile: images/s and
   the edge-popup / dense ratio. The step is the search's: autocast forward, cross-entropy,
   backward, SGD step.
2. An artifact (conv6 with BN, masks from trained-looking random scores) written on the CPU,
   loaded on the CPU and on the GPU: every tensor of the GPU model must equal the CPU one bit
   for bit (the weights are regenerated on the CPU by the portable generator, then moved), and
   the logits' max |GPU - CPU| in fp32 is reported.
3. The loaded model's forward latency on the GPU at batch 1 and 256 (fp32 and AMP).

Without CUDA it exits with status 2 and says so (``--device cpu --smoke`` runs every code path on
the CPU at toy sizes, to check the script itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

CASES = {  # name: (recipe overrides, input shape, batch, edge-popup density)
    "conv6": (["model.arch=conv6"], (3, 32, 32), 256, 0.5),
    "resnet50": (["model.arch=tv_resnet50"], (3, 224, 224), 64, 0.3),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="popcli's CUDA path: steps/s with AMP and channels_last, "
                                                 "torch.compile on/off, artifact on the GPU, loaded-model latency.")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--cases", default="conv6,resnet50", help="comma-separated: conv6, resnet50")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu only with --smoke")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (checks the script, not the GPU)")
    return parser.parse_args()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn, device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_row(case: str, method: str, compiled: bool, args, device) -> dict:
    """images/s of the search's training step for one (case, method, compile) setting."""
    import torch
    import torch.nn.functional as F

    from popcli import recipe as recipes
    from popcli.models import build_model
    from popcli.engine.optim import make_optimizer, trainable_parameters
    from popcli.engine.runtime import make_runtime

    overrides, shape, batch, density = CASES[case]
    if args.smoke:
        shape, batch = (shape[0], 32, 32), 4
    recipe = recipes.load(None, [*overrides, f"search.method={method}", f"search.density={density}",
                                 "model.init=signed_constant"])
    recipes.resolve(recipe)
    runtime = make_runtime(str(device), amp=True)
    model = build_model(recipe.model, recipe.search, in_channels=shape[0], image_size=shape[1], num_classes=10,
                        seed=0).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(trainable_parameters(model), recipe.search)
    scaler = torch.amp.GradScaler("cuda") if runtime.needs_grad_scaler else None
    net = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=gen).to(device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)

    def step() -> None:
        with runtime.autocast():
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    started = time.perf_counter()
    step()  # the first step (compilation when compiled)
    _sync(device)
    first_s = time.perf_counter() - started
    seconds = _median_s(step, device, warmup=1 if args.smoke else 3, reps=2 if args.smoke else args.steps)
    amp = str(runtime.amp_dtype).removeprefix("torch.") if runtime.amp_dtype else "fp32"
    return {"section": "train step", "case": case, "method": method, "compile": compiled, "batch": batch, "amp": amp,
            "channels_last": True, "step_ms": seconds * 1e3, "images_per_s": batch / seconds, "first_step_s": first_s}


def artifact_rows(args, device) -> list[dict]:
    """Write conv6 (+BN) on the CPU, load it on the CPU and the GPU: exact tensors, logit diff, latency."""
    import torch

    import popcli
    from popcli import artifact
    from popcli import recipe as recipes
    from popcli.models import build_model, masked_layers
    from popcli.engine.runtime import make_runtime

    shape = (3, 32, 32)
    recipe = recipes.load(None, ["model.arch=conv6", "model.batchnorm=true", "search.density=0.5"])
    recipes.resolve(recipe)
    model = build_model(recipe.model, recipe.search, in_channels=3, image_size=32, num_classes=10, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in masked_layers(model):  # scores away from their init: masks that are not the initial ones
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=gen))
        model.train()
        for _ in range(3):  # batch-norm statistics that are not the initial ones
            model(torch.randn(64, *shape, generator=gen))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conv6.safetensors"
        artifact.save(model, path, recipe=recipe, data_info={"shape": list(shape), "num_classes": 10})
        on_cpu, on_gpu = popcli.load(path, device="cpu"), popcli.load(path, device=str(device))
        cpu_state, gpu_state = on_cpu.state_dict(), on_gpu.state_dict()
        same = list(cpu_state) == list(gpu_state) and all(torch.equal(cpu_state[k], gpu_state[k].cpu())
                                                          for k in cpu_state)
        x = torch.randn(256 if not args.smoke else 8, *shape, generator=gen)
        with torch.no_grad():
            diff = float((on_gpu(x.to(device)).float().cpu() - on_cpu(x)).abs().max())
        rows.append({"section": "artifact", "case": "conv6+bn", "tensors": len(cpu_state),
                     "bit_identical_on_gpu": same, "logits_max_abs_diff": diff, "bytes": path.stat().st_size})
        runtime = make_runtime(str(device), amp=True)
        for batch in (1, 256 if not args.smoke else 8):
            xb = x[:1].to(device) if batch == 1 else x.to(device)
            for amp in (False, True):
                context = runtime.autocast if amp else (lambda: torch.autocast(device.type, enabled=False))

                def forward() -> None:
                    with torch.no_grad(), context():
                        on_gpu(xb)

                seconds = _median_s(forward, device, warmup=2 if args.smoke else 10, reps=3 if args.smoke else 200)
                rows.append({"section": "loaded latency", "case": "conv6+bn", "batch": batch,
                             "amp": (str(runtime.amp_dtype).removeprefix("torch.") if amp and runtime.amp_dtype
                                     else "fp32"),
                             "p50_ms": seconds * 1e3, "images_per_s": batch / seconds})
    return rows


def table(rows: list[dict]) -> str:
    """One fixed-width table of every row."""
    lines = [f"{'section':<15} {'case':<9} {'setting':<38} {'result':<40}", "-" * 104]
    for r in rows:
        if r["section"] == "train step":
            setting = f"{r['method']:<10} b{r['batch']} {r['amp']} NHWC compile={'on' if r['compile'] else 'off'}"
            result = f"{r['images_per_s']:9.0f} img/s  {r['step_ms']:7.2f} ms/step (first {r['first_step_s']:.1f} s)"
            if "over_dense" in r:
                result += f"  step {r['over_dense']:.2f}x dense"
        elif r["section"] == "failed":
            setting, result = f"training steps, compile={'on' if r['compile'] else 'off'}", r["error"]
        elif r["section"] == "artifact":
            setting = f"CPU-written, loaded on GPU ({r['tensors']} tensors)"
            result = f"bit-identical: {r['bit_identical_on_gpu']}  logits |GPU-CPU| {r['logits_max_abs_diff']:.1e}"
        else:
            setting = f"loaded model forward, b{r['batch']} {r['amp']}"
            result = f"{r['p50_ms']:8.3f} ms p50  {r['images_per_s']:9.0f} img/s"
        lines.append(f"{r['section']:<15} {r['case']:<9} {setting:<38} {result}")
    return "\n".join(lines)


def main() -> int:
    args = parse()
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run it on a "
              "machine with an NVIDIA GPU and a CUDA build of torch (--device cpu --smoke checks the script only)",
              file=sys.stderr)
        return 2
    if device.type != "cuda" and not args.smoke:
        print("benchmarks/gpu.py: --device cpu is only for --smoke (the figures are GPU figures)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)"
    print(f"device: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
          file=sys.stderr)
    rows = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            print(f"benchmarks/gpu.py: unknown case {case!r}; choose from {', '.join(CASES)}", file=sys.stderr)
            return 2
        for compiled in (False,) if args.no_compile else (False, True):
            try:
                dense = train_row(case, "dense", compiled, args, device)
                popup = train_row(case, "edge-popup", compiled, args, device)
            except Exception as err:  # one failed setting (a compile error, OOM) is a row, not the end of the run
                rows.append({"section": "failed", "case": case, "compile": compiled,
                             "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:120] if str(err).strip() else ''}"})
                continue
            popup["over_dense"] = dense["images_per_s"] / popup["images_per_s"]  # step-time ratio
            rows += [popup, dense]
            print(f"  {case} compile={compiled}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows += artifact_rows(args, device)
    print(table(rows))
    print(f"total {time.perf_counter() - started:.0f} s on {name}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    ok = all(r.get("bit_identical_on_gpu", True) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
