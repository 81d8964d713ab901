"""Peak memory of a training step, edge-popup against dense training of the same model.

Each method runs in its own process (so peaks do not mix): build the model, take a few SGD steps
on a fixed batch, report the process's peak resident memory and the memory held by parameters,
gradients and optimizer state. Per weight, edge-popup holds the frozen weight, the score, its
gradient and momentum (4 floats) where dense training holds 3; activations are the same.

    python benchmarks/step_memory.py [--case resnet50] [--batch 8] [--steps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES = {"resnet50": (["model.arch=tv_resnet50", "model.init=signed_constant", "search.density=0.3"], (3, 224, 224)),
         "conv4": (["model.arch=conv4"], (3, 32, 32)), "fc": (["model.arch=fc", "model.hidden=[1024,1024]"], (1, 28, 28))}


def child(case: str, method: str, batch: int, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from popcli import recipe as recipes
    from popcli.models import build_model
    from popcli.engine.optim import make_optimizer, trainable_parameters

    overrides, shape = CASES[case]
    recipe = recipes.load(None, [*overrides, f"search.method={method}"])
    model = build_model(recipe.model, recipe.search, in_channels=shape[0], image_size=shape[1], num_classes=10, seed=0)
    optimizer = make_optimizer(trainable_parameters(model), recipe.search)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=False)  # keep gradients allocated: count them
        loss.backward()
        optimizer.step()
    state = sum(t.numel() * t.element_size() for group in optimizer.state.values() for t in group.values()
                if torch.is_tensor(t))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    return {"case": case, "method": method, "batch": batch, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params_mb": params / 2**20, "grads_mb": grads / 2**20, "optimizer_mb": state / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="resnet50", choices=sorted(CASES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.case, args.child, args.batch, args.steps)))
        return
    results = {}
    for method in ("edge-popup", "dense"):
        out = subprocess.run([sys.executable, __file__, "--case", args.case, "--batch", str(args.batch), "--steps",
                              str(args.steps), "--child", method], capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = results["edge-popup"]["peak_rss_mb"] / results["dense"]["peak_rss_mb"]
    if args.json:
        print(json.dumps({"results": list(results.values()), "peak_ratio": ratio}))
        return
    for r in results.values():
        print(f"{r['case']} {r['method']:10s} batch {r['batch']}: peak RSS {r['peak_rss_mb']:8.1f} MiB | parameters "
              f"{r['params_mb']:7.1f} MiB, gradients {r['grads_mb']:7.1f} MiB, optimizer {r['optimizer_mb']:7.1f} MiB")
    print(f"peak memory edge-popup / dense: {ratio:.2f}")


if __name__ == "__main__":
    main()
