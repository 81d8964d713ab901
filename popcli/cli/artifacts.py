"""``popcli export``, ``popcli inspect`` and ``popcli eval``: ship a found subnetwork, describe
an artifact, measure it. The work is ``export.export``, ``artifact.inspect`` and
``deploy.evaluate``; this module renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from . import examples, tables
from .app import StopFlag, app, err_console, guard, out_console, print_json, spinner

EXPORT_STOP = "stopping once the file being written is complete (Ctrl-C again to abort now)..."


@app.command(epilog=examples.EXPORT)
@guard
def export(
    source: Optional[Path] = typer.Argument(None, metavar="RUN_OR_ARTIFACT",
                                            help="A run folder (its last.pt), a checkpoint, or (with --onnx) an artifact."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The artifact to write (.safetensors; a name "
                                                                 "without a suffix gets it; NAME.onnx writes the ONNX graph)."),
    masks: list[str] = typer.Option([], "--mask", metavar="NAME=RUN",
                                    help="One named mask per run, all over one seed, in one artifact (repeatable)."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="Also (or only) write a verified ONNX graph here."),
    prune_dead_units: bool = typer.Option(False, "--prune-dead-units", help="ONNX: remove units that cannot matter."),
    int8: bool = typer.Option(False, "--int8", help="ONNX: also write <name>.int8.onnx (static QDQ int8)."),
    compact: bool = typer.Option(False, "--compact", help="ONNX: store the weights as keep and sign bits "
                                 "(~2 bits per weight; signed-constant family), unpacked when the session starts."),
    codec: str = typer.Option("auto", "--codec", help="Mask codec: auto (the smaller), packbits or rans."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder for the ONNX parity check."),
    parity_samples: int = typer.Option(1000, "--parity-samples", help="Test images for the ONNX parity check."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Import the model code the file names when it is not popcli's own or an installed entry point (only for files you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Ship a found subnetwork: seed + bit-packed masks (safetensors) and/or a verified ONNX graph."""
    from ..errors import Interrupted
    from ..export import export as run_export

    try:
        with StopFlag(EXPORT_STOP) as stop, spinner("exporting and verifying...", quiet=as_json):
            report = run_export(source, out, onnx=onnx, prune_dead_units=prune_dead_units, int8=int8, codec=codec,
                                force=force, data_dir=data_dir, parity_samples=parity_samples, masks=masks,
                                should_stop=stop, trust_code=trust_code, compact=compact)
    except KeyboardInterrupt:  # a second Ctrl-C: every write is atomic, so no file is left half-written
        raise Interrupted("aborted; each output is either complete or not there (writes are atomic)") from None
    if stop.requested:  # the Ctrl-C came after the last write: the work is done, and says so
        err_console.print("note: Ctrl-C came after the last file was written; nothing was left to stop",
                          highlight=False)
    if as_json:
        print_json(report)
    else:
        if "layers" in report:
            for table in tables.inspect_tables(report):
                out_console.print(table)
            tables.print_verification(err_console, report)
        if "onnx" in report:
            out_console.print(tables.onnx_table(report["onnx"]))
    if not report.get("verified", True):
        raise typer.Exit(1)


@app.command(epilog=examples.INSPECT)
@guard
def inspect(
    artifact: Path = typer.Argument(..., metavar="FILE", help="An artifact written by popcli export."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Show an artifact's metadata, per-layer densities and sizes, and verify it (exit 1 if it fails).
    It never imports model code: a user's model shows its recorded builder and package."""
    from ..artifact import inspect as run_inspect

    report = run_inspect(artifact)
    if as_json:
        print_json(report)
    else:
        for table in tables.inspect_tables(report):
            out_console.print(table)
        tables.print_verification(err_console, report)
    if not report["verified"]:
        raise typer.Exit(1)


@app.command("eval", epilog=examples.EVAL)
@guard
def eval_command(
    source: Path = typer.Argument(..., metavar="ARTIFACT_OR_ONNX", help="An artifact or an ONNX file from popcli export."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder (else the usual search order)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Evaluate on another dataset of the same input shape."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N test images [default: all]."),
    batch_sizes: str = typer.Option("1,64", "--batch-sizes", help="Latency batch sizes, comma-separated."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for PyTorch and ONNX Runtime."),
    provider: str = typer.Option("CPUExecutionProvider", "--provider", help="ONNX Runtime execution provider."),
    int8: bool = typer.Option(False, "--int8", help="Artifacts: also quantize to int8 and measure it."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Multi-mask artifacts: the mask to evaluate (its task's data), "
                                       "or auto: infer each batch's task from its images (SupSup), per --batch-sizes."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", metavar="DIR_OR_NPY",
                                          help="Your own images: a folder (class sub-folders give labels) or a .npy "
                                               "(uint8 pixels, or float32 inputs already prepared)."),
    labels: Optional[Path] = typer.Option(None, "--labels", metavar="FILE",
                                          help="Labels of --inputs, in their order: a .npy of integers or a text file "
                                               "(one class index or name a line)."),
    latency_only: bool = typer.Option(False, "--latency-only",
                                      help="Latency only, on generated inputs of the model's recorded shape (no data)."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Import the model code the file names when it is not "
                                    "popcli's own or an installed entry point (only for files you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Test accuracy (PyTorch, ONNX Runtime) and latency (p50/p90/p99, images/s) of a subnetwork.

    The images: the dataset it was searched on (or --dataset), your own (--inputs, --labels), or
    none (--latency-only)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..deploy.evaluate import evaluate

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                        disable=as_json, transient=True)
    task = None

    def on_event(kind: str, info: dict[str, Any]) -> None:  # the display starts with the first event
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task("", total=None)
        what = (f"accuracy: {info['label']} on {info['images']:,} images" if kind == "accuracy"
                else f"latency: {info['label']}, batch {info['batch_size']}")
        progress.update(task, description=what)

    try:
        report = evaluate(source, dataset=dataset, data_dir=data_dir, limit=limit, batch_sizes=batch_sizes,
                          threads=threads, provider=provider, int8=int8, on_event=on_event, mask=mask, inputs=inputs,
                          labels=labels, latency_only=latency_only, trust_code=trust_code)
    finally:
        progress.stop()
    if as_json:
        print_json(report)
        return
    for table in tables.eval_tables(report):
        out_console.print(table)
