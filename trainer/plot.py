"""One PNG of a run: loss and LR over steps with phase boundaries, and each component's realized
token share per logging window (solid) against its target for that window (dashed)."""

from __future__ import annotations

from pathlib import Path

from midmix.trainer.metrics import read_metrics


def plot_metrics(metrics_path: Path, png_path: Path) -> Path:
    """Draw loss, LR and per-window realized shares from a metrics JSONL into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    steps = [record for record in records if record["kind"] == "step"]
    phase_ends = [record for record in records if record["kind"] == "phase_end"]
    figure, (loss_axis, lr_axis, share_axis) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    x = [record["global_step"] for record in steps]
    loss_axis.plot(x, [record["loss"] for record in steps], linewidth=1)
    loss_axis.set_ylabel("train loss")
    lr_axis.plot(x, [record["lr"] for record in steps], color="tab:orange")
    lr_axis.set_ylabel("learning rate")
    phase_start = x[0] if x else 0
    for record in phase_ends:
        for axis in (loss_axis, lr_axis, share_axis):
            axis.axvline(record["global_step"] - 0.5, color="grey", linestyle=":", linewidth=1)
        loss_axis.annotate(f" {record['phase']}", (phase_start, 1.0), xycoords=("data", "axes fraction"),
                           ha="left", va="top", fontsize=8)
        phase_start = record["global_step"]
    _window_shares(share_axis, records)
    share_axis.set_xlabel("step")
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def _window_shares(axis, records: list[dict]) -> None:
    """Each component's share per window (the step records' ``shares`` and each phase's last window)."""
    series: dict[str, tuple[list, list, list]] = {}
    for record in records:
        shares = record.get("shares") or {}
        window = shares.get("steps")
        if record["kind"] != "step" or not window:
            continue
        offset = record["global_step"] - record["phase_step"]  # the phase's first global step
        middle = offset + (window[0] + window[1] - 1) / 2
        for name, entry in shares.get("components", {}).items():
            xs, realized, target = series.setdefault(f"{record['phase']}/{name}", ([], [], []))
            xs.append(middle)
            realized.append(entry["share"])
            target.append(entry.get("target"))
    colors: dict[str, str] = {}
    for label, (xs, realized, target) in series.items():
        component = label.split("/", 1)[1]
        color = colors.setdefault(component, f"C{len(colors) % 10}")
        axis.plot(xs, realized, color=color, linewidth=1.2, marker=".", label=component if component not in
                  [line.get_label() for line in axis.lines] else None)  # fmt: skip
        axis.plot(xs, target, color=color, linewidth=1, linestyle="--")
    axis.set_ylabel("token share per window\n(dashed: target)")
    axis.set_ylim(0, 1)
    if series:
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
