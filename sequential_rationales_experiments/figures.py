"""Saving figures the way every plot script does: PNG and PDF side by side."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, out: str | Path) -> list[Path]:
    """Write ``OUT.png`` and ``OUT.pdf`` (creating the folder), close ``fig``, return both."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_name(out.name + ".png"), out.with_name(out.name + ".pdf")]
    for path in paths:
        fig.savefig(path, dpi=200, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
