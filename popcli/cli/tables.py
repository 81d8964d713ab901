"""Tables the CLI prints (rich): search summaries, artifact reports, ONNX exports, eval results.

CLI-side only, like ``progress``: each function turns one of the library's report dicts into
tables; nothing here computes anything.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import count


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="search result", show_header=False, title_justify="left")
    rows = [
        ("test accuracy", f"{summary['test_acc'] * 100:.2f}%" + (f" top-1, {summary['test_top5'] * 100:.2f}% top-5"
                                                                 if summary.get("test_top5") is not None else "")),
        ("method / arch / init", f"{summary['method']} / {summary['arch']} / {summary['init']}"),
        ("weights kept", f"{summary['params_kept']:,} of {summary['params_total']:,} ({summary['kept_fraction'] * 100:.1f}%)"),
        ("training", f"{summary['steps']:,} steps = {summary['epochs']:.2f} epochs"),
        ("median step", f"{summary['step_time_ms']:.1f} ms ({summary['images_per_s']:.0f} images/s)"
                        if summary.get("step_time_ms") is not None else "n/a (no step ran in this session)"),
        ("wall time", _wall_time(summary)),
        *([("validation accuracy", f"{summary['val_acc'] * 100:.2f}%")] if summary.get("val_acc") is not None else []),
        *([("data", f"{summary['data_folder']}")] if summary.get("data_folder") else []),
        ("weights unchanged", "verified" if summary["weights_verified"] else "n/a (dense training)"),
        ("run folder", summary["run_dir"]),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def _wall_time(summary: dict[str, Any]) -> str:
    """"41.2 s on cpu, 2 threads (this session 12.0 s)": every session of a resumed run counts."""
    text = f"{summary['wall_s']:.1f} s on {where(summary)}"
    if summary.get("world_size", 1) > 1:
        text += f" x {summary['world_size']} processes"
    session = summary.get("session_wall_s")
    if session is not None and session < summary["wall_s"] - 0.05:
        text += f" (this session {session:.1f} s)"
    return text


def where(summary: dict[str, Any]) -> str:
    """"cpu, 1 thread" / "cuda:0, amp bfloat16": the device fields of a summary (``device`` alone
    in summaries written before 0.3, which held the whole phrase)."""
    parts = [str(summary.get("device"))]
    if summary.get("amp"):
        parts.append(f"amp {summary['amp']}")
    if summary.get("threads"):
        parts.append(count(summary["threads"], "thread"))
    return ", ".join(parts)


def size(nbytes: int | None) -> str:
    if nbytes is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return ""


def _inference_table(report: dict[str, Any]) -> Table:
    """Bytes held at inference by each way to run the model (``inspect``'s ``inference_bytes``)."""
    held, masked = report["inference_bytes"], max(1, report["masked_weights"])
    table = Table("way to run it", "bytes held", "bits per masked weight", title="weights at inference",
                  title_justify="left", caption="other stored tensors (batch-norm statistics, biases) included; "
                  "ONNX Runtime holds the fp32 and the compact file's weights as fp32")
    for label, key in (("popcli.load(), ONNX fp32 / --compact", "fp32"), ("ONNX int8 (--int8)", "int8"),
                       ('popcli.load(mode="packed")', "packed")):
        value = held[key]
        table.add_row(label, size(value) if value is not None else "n/a (float weights)",
                      f"{8 * value / masked:.2f}" if value is not None else "")
    return table


def inspect_tables(report: dict[str, Any]) -> list[Table]:
    """Every string from the file is escaped: a name holding rich markup (``[/x]``) prints as written."""
    about = Table(title=escape(report["path"]), show_header=False, title_justify="left")
    acc = report["metrics"].get("test_acc")
    rows = [
        ("format / generator", f"{report['format']} / {report['generator']}"),
        ("model", f"{report['arch'] or '(no builder)'} ({report['method']}, {report['init']}, seed {report['seed']})"),
        ("kept", f"{report['kept_weights']:,} of {report['masked_weights']:,} masked weights "
                 f"({report['kept_weights'] / max(1, report['masked_weights']):.1%}; recipe density {report['density']:g})"),
        ("search result", f"test accuracy {acc:.2%}" if isinstance(acc, (int, float)) else "not recorded"),
        ("written by", f"popcli {report['popcli_version']}, torch {report['torch_version']}"),
    ]
    sub = report.get("subspace")
    if sub:  # w = w0 + P z: the trained numbers are z
        rows.insert(3, ("subspace", f"z: {sub['dim']:,} x {sub['dtype']} = {sub['z_bytes']:,} bytes, "
                                    f"projection {sub['projection']}"))
    code = _builder_row(report.get("builder"))
    if code:
        rows.insert(2, ("model code", code))
    for key, value in rows:
        about.add_row(key, escape(value))
    layers = Table("layer", "shape", "kept", "density", "entropy bits/weight", title="masked layers",
                   title_justify="left")
    for layer in report["layers"]:
        layers.add_row(escape(layer["name"]), "x".join(map(str, layer["shape"])), f"{layer['kept']:,}", f"{layer['density']:.4f}",
                       f"{layer['entropy_bits_per_weight']:.4f}")
    if report["masked_weights"]:
        layers.caption = (f"masks: {escape(report['mask_codec'])}, {report['mask_bytes']:,} bytes = "
                          f"{report['mask_bits_per_weight']:.4f} bits per weight (entropy {report['entropy_bits_per_weight']:.4f})")
    if "iterand_draw_bytes" in report:  # IteRand: the kept weights' draw numbers
        layers.caption = (layers.caption or "") + (f"\nIteRand draws: {report['iterand_draw_bytes']:,} bytes, "
                                                   f"{report['iterand_redrawn_kept']:,} kept weights re-drawn")
    sizes = Table("", "bytes", "vs artifact", title="size", title_justify="left")
    bits = report["bits_per_masked_weight"]
    sizes.add_row("artifact", size(report["artifact_bytes"]), f"1x ({bits:.4f} bits per masked weight)" if bits else "1x")
    sizes.add_row("dense fp32 safetensors", size(report["dense_fp32_bytes"]), f"{report['dense_over_artifact']:.1f}x")
    ratio = report["checkpoint_over_artifact"]
    sizes.add_row("search checkpoint", size(report["checkpoint_bytes"]), f"{ratio:.1f}x" if ratio else "n/a")
    tables = [about, layers, sizes, _inference_table(report)]
    if report.get("masks"):  # a multi-mask file: the rows above describe its first mask
        masks = Table("mask", "kept", "own bytes", "search test accuracy", title="masks over the same seed",
                      title_justify="left")
        for row in report["masks"]:
            acc = row["test_acc"]
            masks.add_row(row["name"], f"{row['kept_weights']:,}", size(row["bytes"]), f"{acc:.2%}" if acc is not None else "")
        tables.append(masks)
    return tables


def _builder_row(info: dict[str, Any] | None) -> str:
    """Where a user's model's code lives, as the file records it (inspect imports none of it)."""
    if not info or info["kind"] == "popcli":
        return ""
    where = f"{info['target']}" if info.get("target") and info["target"] != info["arch"] else ""
    package = f", package {info['package']} {info.get('version') or ''}".rstrip() if info.get("package") else ""
    return {"none": "none recorded: load it into your own module, popcli.load(path, model=...)",
            "registered": f"registered in this process: {where}{package}",
            "built": f"import path {info['arch']!r}{package} (already imported by this process)",
            "entry_point": f"entry point {info['arch']!r} -> {where}{package} (installed)",
            "import": f"import path {info['arch']!r}{package} (not imported; loading needs --trust-code)",
            "package": f"{info['arch']!r} registered by {where}{package} (not imported; loading needs --trust-code)",
            }.get(info["kind"], f"{info['arch']!r}: not popcli's, no package recorded")


def print_verification(console: Console, report: dict[str, Any]) -> None:
    if report.get("verified") and report.get("structure_checked", True):
        console.print("verified: masks decode, kept counts, weight checksums, method state and the model's structure "
                      "match", highlight=False)
    elif report.get("verified"):
        console.print("verified: masks decode, kept counts, weight checksums and method state match; the model's "
                      "structure was not checked (inspect does not import model code; popcli.load checks it)",
                      highlight=False)
    for problem in report.get("problems", []):
        console.print(f"[red]problem:[/red] {escape(problem)}", highlight=False, soft_wrap=True)


def onnx_table(report: dict[str, Any]) -> Table:
    table = Table(title=escape(f"ONNX: {report['path']}"), show_header=False, title_justify="left")
    parity, before, after = report["parity"], report["before"], report["after"]
    shape = ", ".join(map(str, report.get("input_shape", ["batch", "C", "H", "W"])))
    classes = f" [batch, {report['num_classes']}]" if "num_classes" in report else ""
    table.add_row("graph", escape(f"opset {report['opset']}, {size(report['bytes'])}, input [{shape}] float32 -> logits{classes}"))
    if "compact" in report:
        c = report["compact"]
        table.add_row("compact", f"{c['packed_weights']} of {c['weight_tensors']} weight tensors as keep+sign bits: "
                                 f"{size(report['bytes'])} vs fp32 graph {size(c['fp32_bytes'])} "
                                 f"({c['fp32_bytes'] / report['bytes']:.1f}x smaller)")
    table.add_row("parity vs PyTorch", f"max |diff| {parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:g}), "
                                       f"top-1 agreement {parity['top1_agreement']:.2%} on {parity['samples']} test images")
    table.add_row("parameters", f"{before['params']:,} -> {after['params']:,} "
                                f"({report['dead_units_removed']} dead units removed)")
    table.add_row("FLOPs per image", f"{before['flops']:,} -> {after['flops']:,}")
    if "int8" in report:
        q = report["int8"]
        table.add_row("int8", escape(f"{q['path']} ({size(q['bytes'])})"))
        if q.get("int8_acc") is not None:
            table.add_row("int8 accuracy", f"{q['int8_acc']:.2%} vs fp32 {q['fp32_acc']:.2%} ({q['acc_change_points']:+.2f} "
                                           f"points, {q['test_samples']} test images)")
        else:  # calibrated on the user's inputs, which come without labels
            table.add_row("int8 vs fp32 top-1", f"{q['top1_agreement']:.2%} agreement on {q['test_samples']} inputs")
        table.add_row("int8 latency, batch 64", int8_speed(q))
    return table


def int8_speed(q: dict[str, Any]) -> str:
    """"0.91 ms vs fp32 1.30 ms: int8 is 1.43x faster" (or slower): a speed, not a time ratio."""
    ratio = q["batch64_fp32_ms"] / q["batch64_int8_ms"]  # > 1: int8 is faster
    how = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
    return f"{q['batch64_int8_ms']:.2f} ms vs fp32 {q['batch64_fp32_ms']:.2f} ms: int8 is {how}"


def eval_tables(report: dict[str, Any]) -> list[Table]:
    machine = report["machine"]
    tables = []
    rows = report["accuracy"]
    if rows:
        top5 = any(row.get("top5") is not None for row in rows)
        where = f"{report['dataset']} test images" if report.get("dataset") else "your images (--inputs)"
        accuracy = Table("engine", "test accuracy", *(["top-5"] if top5 else []),
                         title=escape(f"accuracy on {report['test_images']:,} {where}"), title_justify="left")
        for row in rows:
            accuracy.add_row(escape(row["label"]), f"{row['top1']:.2%}", *([_pct(row.get("top5"))] if top5 else []))
        if report.get("search_acc") is not None:
            accuracy.caption = f"the search reported {report['search_acc']:.2%}"
        tables.append(accuracy)
    inputs = {"generated": ", generated inputs", "files": ", your inputs"}.get(report.get("inputs"), "")
    speed = Table("engine", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "session start ms",
                  title=escape(f"latency: {machine['cpu']}, {count(report['threads'], 'thread')}, "
                               f"{report['provider']}{inputs}"),
                  title_justify="left", caption=escape(report["note"]))
    for row in report["latency"]:
        speed.add_row(escape(row["label"]), str(row["batch_size"]), f"{row['p50_ms']:.3f}", f"{row['p90_ms']:.3f}",
                      f"{row['p99_ms']:.3f}", f"{row['images_per_s']:,.0f}",
                      "" if row.get("session_start_ms") is None else f"{row['session_start_ms']:.1f}")
    return [*([task_table(report["task_inference"])] if "task_inference" in report else []), *tables, speed]


def task_table(tasks: dict[str, Any]) -> Table:
    """``--mask auto``: per mask and batch size, how often the task was found and the accuracies."""
    table = Table("mask", "batch", "batches", "task found", "acc (inferred mask)", "acc (own mask)",
                  title="task inference (SupSup one-shot entropy gradient)", title_justify="left")
    for row in tasks["rows"]:
        table.add_row(escape(row["mask"]), str(row["batch_size"]), f"{row['batches']:,}", f"{row['task_id_acc']:.2%}",
                      f"{row['acc_inferred']:.2%}", f"{row['acc_given']:.2%}")
    table.caption = "task found, all masks: " + ", ".join(f"batch {size} {acc:.2%}"
                                                          for size, acc in tasks["task_id_acc"].items())
    return table


def _pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else ""
