"""Search a subnetwork, ship it as seed + bit mask, load it back and check it (the Python API).

    python examples/search_api.py                 # Fashion-MNIST quick start, 1 epoch
    python examples/search_api.py --synthetic     # no dataset needed (a few seconds)

The CLI does the same with `popcli search`, `popcli export` and `popcli inspect`.
"""

import sys
import tempfile
from pathlib import Path

import torch

import popcli
from popcli import recipe as recipes
from popcli.data import load_data
from popcli.export import export
from popcli.engine.loop import evaluate, search


def main() -> None:
    overrides = ["search.epochs=1"]
    if "--synthetic" in sys.argv:
        overrides += ["data.dataset=synthetic", "data.shape=[1,28,28]", "data.train_size=2048", "data.test_size=512"]
    recipe = recipes.load(None, overrides)  # None: the packaged quick-start recipe

    def on_event(kind: str, info: dict) -> None:  # the library never prints; we decide what to show
        if kind == "epoch":
            print(f"epoch {info['epoch']}: test accuracy {info['test_acc']:.2%}")

    with tempfile.TemporaryDirectory() as tmp:
        summary = search(recipe, Path(tmp) / "run", on_event=on_event)
        print(f"kept {summary['params_kept']:,} of {summary['params_total']:,} random weights "
              f"({summary['kept_fraction']:.0%}); weights unchanged: {summary['weights_verified']}")

        report = export(Path(tmp) / "run", Path(tmp) / "model.safetensors")  # seed + masks (+ BN stats)
        print(f"artifact: {report['artifact_bytes']:,} bytes = {report['bits_per_masked_weight']:.3f} bits per "
              f"masked weight ({report['dense_over_artifact']:.0f}x smaller than dense fp32); verified: {report['verified']}")

        model = popcli.load(Path(tmp) / "model.safetensors")  # regenerated from the seed, checksums verified
        test = load_data(recipe.data, recipe.seed).test
        x, _ = next(test.batches())
        with torch.no_grad():
            print(f"loaded model: test accuracy {evaluate(model, test)['acc']:.2%} "
                  f"(search: {summary['test_acc']:.2%}); logits of a batch: {tuple(model(x).shape)}")


if __name__ == "__main__":
    main()
