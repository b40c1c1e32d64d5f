"""A Lightning ``Callback`` that runs a netslim schedule inside ``Trainer.fit()``.

    from netslim.integrations.lightning import NetslimCallback
    from netslim.unstructured.config import Unstructured

    trainer = lightning.Trainer(max_epochs=3, callbacks=[NetslimCallback(Unstructured(0.8), schedule="agp")])
    trainer.fit(module, loader)

The schedule is a :class:`netslim.integrations.session.PruningSession` (one-shot, iterative or
AGP; unstructured or structural). Pruning runs in ``on_train_batch_start`` when the optimizer
steps done (``trainer.global_step``) reach a scheduled step, with that batch's inputs as the
example for structural tracing, and the trainer's optimizers are handed the new parameters with
their state sliced to the kept channels. ``attribute`` names the submodule to prune when the
LightningModule wraps the network (e.g. ``"model"``); by default the LightningModule itself,
which then needs a ``forward``.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package has the same API
    from pytorch_lightning import Callback

from netslim.integrations.session import PruningSession, example_from_batch


class NetslimCallback(Callback):
    """Prunes during ``Trainer.fit()`` per ``config`` and ``schedule`` (see the module docstring).

    Keyword arguments are those of :class:`PruningSession`; anything else goes to
    :func:`netslim.prune_`. ``history`` lists the pruning steps that ran.
    """

    def __init__(self, config: Any, *, attribute: str | None = None, **kwargs: Any):
        session_keys = ("schedule", "start_step", "end_step", "rounds", "update_every")
        session = {k: kwargs.pop(k) for k in session_keys if k in kwargs}
        example = kwargs.pop("example_inputs", None)
        self.attribute = attribute
        self._example: Any = None
        self.session = PruningSession(
            config, example_inputs=example, prune_kwargs=kwargs, **session
        )

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.session.history

    def _target(self, pl_module: Any) -> Any:
        return getattr(pl_module, self.attribute) if self.attribute else pl_module

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        total = trainer.estimated_stepping_batches
        self.session.plan(int(total) if total and total != float("inf") else None)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.session.done:
            return
        self._example = example_from_batch(batch)
        self.session.on_step(
            self._target(pl_module),
            trainer.global_step,
            optimizer=list(trainer.optimizers),
            example_inputs=self._example,
            train_loader=trainer.train_dataloader,
        )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.session.finish(
            self._target(pl_module),
            optimizer=list(trainer.optimizers),
            example_inputs=self._example,
        )
