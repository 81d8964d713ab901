"""Optional TensorBoard logging of a search (``search.log=tensorboard``), off by default.

``attach(recipe, run_dir, on_event)`` returns an event handler that forwards every event to
``on_event`` and writes scalars to ``RUN/tensorboard/``: every ``search.log_every`` steps the
step's loss, accuracy, learning rate and images/s; each epoch train / val / test figures. It
needs the ``tensorboard`` package (``pip install 'popcli[tensorboard]'``); a missing one is a
one-line error before any work. Writing files is all it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError

EventHandler = Callable[[str, dict[str, Any]], None]
EPOCH_SCALARS = {"train_loss": "train/epoch_loss", "train_acc": "train/epoch_acc", "val_acc": "val/acc",
                 "test_acc": "test/acc", "test_top5": "test/top5", "test_loss": "test/loss"}


def attach(recipe, run_dir: Path, on_event: EventHandler) -> tuple[EventHandler, Callable[[], None]]:
    """(handler, close) for this search; ``on_event`` unchanged and a no-op close when logging is off."""
    if recipe.search.log != "tensorboard":
        return on_event, lambda: None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("search.log=tensorboard needs the tensorboard package: pip install 'popcli[tensorboard]' "
                         "(or drop search.log)") from None
    writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
    every = recipe.search.log_every

    def handle(kind: str, info: dict[str, Any]) -> None:
        if kind == "step" and info["step"] % every == 0:
            step = info["step"]
            writer.add_scalar("train/loss", info["loss"], step)
            writer.add_scalar("train/acc", info["acc"], step)
            writer.add_scalar("train/images_per_s", info["images_per_s"], step)
            if "lr" in info:
                writer.add_scalar("train/lr", info["lr"], step)
        elif kind == "epoch":
            for key, tag in EPOCH_SCALARS.items():
                if info.get(key) is not None:
                    writer.add_scalar(tag, info[key], info["step"])
        on_event(kind, info)

    def close() -> None:
        writer.flush()
        writer.close()

    return handle, close
