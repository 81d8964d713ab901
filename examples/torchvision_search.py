"""A torchvision model, your own Dataset, the Python API: search, save, load elsewhere, ONNX.

    python examples/torchvision_search.py                 # a few minutes on 2 CPU cores
    python examples/torchvision_search.py --steps 120     # longer search, better accuracy

1. ``Shapes``: a Dataset of your own (here generated: squares, discs and crosses, 32x32 RGB).
2. ``build``: torchvision's ResNet-18 for it; ``popcli.subnetify`` turns its Conv2d /
   Linear layers into subnet layers (random weights that never train, one score per weight).
3. ``popcli.search(model, train, test, arch="torchvision_search:build")``: the search loop on
   that Dataset; ``arch`` names this file's ``build`` so that any process can rebuild the model.
4. The run is exported as an artifact (seed + bit masks + batch-norm statistics), then a fresh
   Python process loads it (``popcli.load(..., trust_code=True)``: the file names this file's
   builder, which a fresh process imports only when told to; weights regenerated from the
   seed), compares its logits with this process's (bit for bit, or float rounding where loading
   folds batch norm), and exports a verified ONNX graph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent


def build(*, num_classes: int, **_):
    """The model: plain torchvision (popcli converts it when it rebuilds it from an artifact)."""
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


class Shapes(Dataset):
    """Item i: a colored square, disc or cross (class i % 3) at a position and size drawn from i."""

    classes = ["square", "disc", "cross"]

    def __init__(self, size: int, offset: int = 0, image_size: int = 32):
        self.size, self.offset, self.s = size, offset, image_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        gen = torch.Generator().manual_seed(self.offset + i)  # item i is a pure function of i: exact resume
        label, s = i % 3, self.s
        r = int(torch.randint(s // 6, s // 3, (1,), generator=gen))
        cy, cx = (int(v) for v in torch.randint(r, s - r, (2,), generator=gen))
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        dy, dx = (yy - cy).abs(), (xx - cx).abs()
        shape = [(dy <= r) & (dx <= r), dy ** 2 + dx ** 2 <= r ** 2, ((dy <= r // 3) | (dx <= r // 3)) & (dy <= r) & (dx <= r)][label]
        color = torch.rand(3, 1, 1, generator=gen) * 0.8 + 0.2
        image = 0.1 * torch.randn(3, s, s, generator=gen) + shape.float() * color
        return (image - 0.25) / 0.5, label


FRESH_PROCESS = """
import json, sys, torch, popcli
from popcli.export import export
artifact, onnx, check = sys.argv[1:4]
# the file names the builder torchvision_search:build, our own code: a file imports code only when trusted
model = popcli.load(artifact, trust_code=True)      # rebuilt from torchvision_search:build + seed + masks
x, expected = torch.load(check, weights_only=True)
with torch.no_grad():
    logits = model(x)
report = export(artifact, onnx=onnx, inputs=x, trust_code=True)  # baked, checked with onnx.checker and ONNX Runtime
print(json.dumps({"same_logits": torch.equal(logits, expected), "max_diff": float((logits - expected).abs().max()),
                  "same_predictions": torch.equal(logits.argmax(1), expected.argmax(1)),
                  "onnx_bytes": report["onnx"]["bytes"], "onnx_max_abs_diff": report["onnx"]["parity"]["max_abs_diff"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="search steps (batch 32)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run, artifact and ONNX [a temp dir]")
    args = parser.parse_args()

    import popcli
    from popcli.export import export

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        train, test = Shapes(960), Shapes(192, offset=10**6)
        model = popcli.subnetify(build(num_classes=3), density=0.5)  # on the CPU; the search redraws its weights

        def on_event(kind: str, info: dict) -> None:  # the library never prints: we do
            if kind == "epoch":
                print(f"step {info['step']}: train acc {info['train_acc']:.1%}, test acc {info['test_acc']:.1%}")

        summary = popcli.search(model, train, test, arch="torchvision_search:build", run_dir=out / "run", force=True,
                                batch_size=32, epochs=1, max_steps=args.steps, lr=0.1, threads=min(2, os.cpu_count() or 1),
                                on_event=on_event)
        print(f"searched {summary['params_kept']:,} of {summary['params_total']:,} random weights kept, "
              f"test accuracy {summary['test_acc']:.1%} ({summary['steps']} steps, {summary['wall_s']:.0f} s)")

        report = export(out / "run", out / "shapes.safetensors", force=True)  # save: seed + masks + BN statistics
        print(f"artifact: {report['artifact_bytes']:,} bytes ({report['dense_over_artifact']:.0f}x smaller than dense "
              f"fp32), model code recorded as {report['model_source']}")

        x = torch.stack([test[i][0] for i in range(16)])
        with torch.no_grad():
            torch.save((x, model.eval()(x)), out / "check.pt")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        fresh = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out / "shapes.safetensors"),
                                str(out / "shapes.onnx"), str(out / "check.pt")],
                               capture_output=True, text=True, env=env, timeout=600)
        if fresh.returncode != 0:
            sys.exit(f"the fresh process failed: {fresh.stderr.strip().splitlines()[-1]}")
        result = json.loads(fresh.stdout)
        # Bit for bit unless popcli.load folds batch norm into the weights for speed (float rounding).
        print(f"fresh process: logits bit for bit: {result['same_logits']} (max |loaded - searched| = "
              f"{result['max_diff']:.1e}), same predictions: {result['same_predictions']}; ONNX "
              f"{result['onnx_bytes']:,} bytes, max |ONNX - PyTorch| = {result['onnx_max_abs_diff']:.2e}")
        if result["max_diff"] > 1e-4 or not result["same_predictions"]:
            sys.exit("the loaded model differs from the searched one")


if __name__ == "__main__":
    main()
