"""Rich progress display for the search, fed by ``search``'s ``on_event(kind, info)`` callback.

CLI-side only: the library emits events, this renders them on stderr (epoch, step, loss,
accuracy, images/s, ETA). Disabled (``enabled=False``) it swallows every event.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SearchDisplay:
    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2%}  {task.fields[ips]:.0f} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = None

    def __enter__(self) -> "SearchDisplay":
        return self  # the live display starts with the first event, so early errors print alone

    def __exit__(self, *exc) -> None:
        if self.task is not None:
            self.progress.stop()

    def handle(self, kind: str, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        getattr(self, f"_on_{kind}", lambda info: None)(info)

    def _on_start(self, info: dict[str, Any]) -> None:
        data = info["data"]
        val = f" / {data.val_size:,} validation" if data.val_size else ""
        self.console.print(f"searching on {data.name} ({data.train_size:,} train{val} / {data.test_size:,} test, "
                           f"shape {tuple(data.shape)}, from {data.source}), {info['device']}", highlight=False)
        self.progress.start()
        self.task = self.progress.add_task("search", total=info["total_steps"], completed=info["step"],
                                           epoch=1, loss=float("nan"), acc=0.0, ips=0.0)

    def _on_step(self, info: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=info["step"], epoch=info["epoch"] + 1, loss=info["loss"],
                             acc=info["acc"], ips=info["images_per_s"])

    def _on_nothing_to_resume(self, info: dict[str, Any]) -> None:
        self.console.print(f"no checkpoint in {info['run_dir']} yet (stopped before its first one): starting the run",
                           highlight=False)

    def _on_finished_already(self, info: dict[str, Any]) -> None:
        self.console.print(f"this run already finished ({info.get('steps')} steps); summary.json left as it is. "
                           "Raise search.epochs or search.max_steps with --set to continue it", highlight=False)

    def _on_epoch(self, info: dict[str, Any]) -> None:
        val = f"  val acc {info['val_acc']:.2%}" if "val_acc" in info else ""
        top5 = f" (top-5 {info['test_top5']:.2%})" if "test_top5" in info else ""
        self.console.print(f"epoch {info['epoch']}: train loss {info['train_loss']:.4f}  train acc {info['train_acc']:.2%}"
                           f"{val}  test acc {info['test_acc']:.2%}{top5}  ({info['epoch_time_s']:.1f} s)", highlight=False)
