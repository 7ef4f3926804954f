"""Wall-clock timing on any device: CUDA kernels run asynchronously, so a timer has to wait for
the device before it reads the clock."""

from __future__ import annotations

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished its queued work (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
