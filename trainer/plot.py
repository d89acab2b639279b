"""One PNG of a run: loss and LR over steps with phase boundaries, realized shares per phase."""

from __future__ import annotations

from pathlib import Path

from midmix.trainer.metrics import read_metrics


def plot_metrics(metrics_path: Path, png_path: Path) -> Path:
    """Draw loss, LR and realized shares by phase from a metrics JSONL into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    steps = [record for record in records if record["kind"] == "step"]
    phase_ends = [record for record in records if record["kind"] == "phase_end"]
    figure, (loss_axis, lr_axis, share_axis) = plt.subplots(3, 1, figsize=(9, 10))
    x = [record["global_step"] for record in steps]
    loss_axis.plot(x, [record["loss"] for record in steps], linewidth=1)
    loss_axis.set_ylabel("train loss")
    lr_axis.plot(x, [record["lr"] for record in steps], color="tab:orange")
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("step")
    phase_start = x[0] if x else 0
    for record in phase_ends:
        for axis in (loss_axis, lr_axis):
            axis.axvline(record["global_step"] - 0.5, color="grey", linestyle=":", linewidth=1)
        loss_axis.annotate(f" {record['phase']}", (phase_start, 1.0), xycoords=("data", "axes fraction"),
                           ha="left", va="top", fontsize=8)
        phase_start = record["global_step"]
    _share_bars(share_axis, phase_ends)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def _share_bars(axis, phase_ends: list[dict]) -> None:
    """Stacked bars: each phase's realized share per component."""
    names = [record["phase"] for record in phase_ends]
    shares = [_flat_shares(record.get("shares") or {}) for record in phase_ends]
    components = sorted({component for share in shares for component in share})
    bottoms = [0.0] * len(names)
    for component in components:
        heights = [share.get(component, 0.0) for share in shares]
        axis.bar(names, heights, bottom=bottoms, label=component)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights)]
    axis.set_ylabel("realized token share")
    axis.set_ylim(0, 1)
    if components:
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _flat_shares(shares: dict) -> dict[str, float]:
    """Component -> realized token share, from ``PhaseStream.realized_shares``."""
    return {name: float(entry["share"]) for name, entry in shares.get("components", {}).items()}
