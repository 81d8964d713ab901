"""Search a subnetwork through the Python API (the CLI's `popcli search` does the same).

    python examples/search_api.py                 # Fashion-MNIST quick start, 1 epoch
    python examples/search_api.py --synthetic     # no dataset needed (a few seconds)
"""

import sys
import tempfile

from popcli import recipe as recipes
from popcli.search import search


def main() -> None:
    overrides = ["search.epochs=1"]
    if "--synthetic" in sys.argv:
        overrides += ["data.dataset=synthetic", "data.shape=[1,28,28]", "data.train_size=2048", "data.test_size=512"]
    recipe = recipes.load(None, overrides)  # None: the packaged quick-start recipe

    def on_event(kind: str, info: dict) -> None:  # the library never prints; we decide what to show
        if kind == "epoch":
            print(f"epoch {info['epoch']}: test accuracy {info['test_acc']:.2%}")

    with tempfile.TemporaryDirectory() as run_dir:
        summary = search(recipe, run_dir, on_event=on_event)
    print(f"kept {summary['params_kept']:,} of {summary['params_total']:,} random weights "
          f"({summary['kept_fraction']:.0%}); test accuracy {summary['test_acc']:.2%}; "
          f"weights unchanged: {summary['weights_verified']}")


if __name__ == "__main__":
    main()
