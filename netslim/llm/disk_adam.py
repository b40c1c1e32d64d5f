"""Adam whose moments live in a scratch file, for the streaming path.

The streaming path keeps one block in memory; Adam's two moments are two more copies of that
block, and with its gradients they were most of the streaming peak (1.34x the plain stream on
TinyLlama's shapes). Here the moments are kept on disk (the offload of ZeRO-Infinity, to a file
instead of NVMe) and each parameter is stepped from its gradient hook the moment its gradient
is ready, a slice at a time: read the slice's moments, update them and the weights, write them
back. What is alive beside the block is one gradient and a few slice-sized buffers.

The update is ``torch.optim.Adam``'s (no weight decay), computed in float32 with float32
moments whatever the parameter's dtype. The file is unlinked as soon as it is created, so it
disappears with the optimizer even if the process dies; the operating system's file cache may
hold its pages, which it can drop under memory pressure, unlike the process's own memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

SLICE = 1 << 18
"""Elements per slice (1 MiB per float32 buffer): small beside a block, large enough that the
file reads and writes cost little next to the update's arithmetic."""


class DiskAdam:
    """Adam over ``params`` with moments in an unlinked file under ``scratch``.

    ``step(p)`` applies one Adam step to ``p`` from ``p.grad`` (call it once per backward pass
    per parameter, e.g. from ``register_post_accumulate_grad_hook``); ``close()`` drops the file.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        scratch: Path | str,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.offset: dict[nn.Parameter, int] = {}
        self.steps: dict[nn.Parameter, int] = {}
        end = 0
        for p in params:
            if not p.is_contiguous():  # stepped through a flat view of its storage
                raise ValueError("DiskAdam needs contiguous parameters")
            self.offset[p], self.steps[p] = end, 0
            end += 2 * p.numel() * 4  # first moment, then second, float32
        self.file = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 (closed by close())
        self.file.truncate(end)  # a sparse file: reads as zeros until written
        self.m = np.empty(SLICE, dtype=np.float32)
        self.v = np.empty(SLICE, dtype=np.float32)

    def _io(self, write: bool, where: int, buf: np.ndarray) -> None:
        self.file.seek(where)
        view = memoryview(buf).cast("B")
        if write:
            self.file.write(view)
        else:
            self.file.readinto(view)

    @torch.no_grad()
    def step(self, p: nn.Parameter) -> None:
        if p.grad is None:
            return
        self.steps[p] += 1
        t = self.steps[p]
        (b1, b2), n = self.betas, p.numel()
        step_size = self.lr / (1 - b1**t)
        root_bc2 = (1 - b2**t) ** 0.5
        flat, grad = p.view(-1), p.grad.reshape(-1)
        base = self.offset[p]
        for start in range(0, n, SLICE):
            size = min(SLICE, n - start)
            m_np, v_np = self.m[:size], self.v[:size]
            m_at, v_at = base + start * 4, base + (n + start) * 4
            if t == 1:
                m_np.fill(0.0)
                v_np.fill(0.0)
            else:
                self._io(False, m_at, m_np)
                self._io(False, v_at, v_np)
            m, v = torch.from_numpy(m_np), torch.from_numpy(v_np)
            g = grad[start : start + size].float().cpu()
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v.sqrt().div_(root_bc2).add_(self.eps)
            update = m.div(denom).mul_(-step_size)
            part = flat[start : start + size]
            part.copy_(part.float().add_(update.to(part.device)))
            self._io(True, m_at, m_np)
            self._io(True, v_at, v_np)

    def close(self) -> None:
        self.file.close()
