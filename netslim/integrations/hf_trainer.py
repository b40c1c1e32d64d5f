"""A ``transformers.TrainerCallback`` that runs a netslim schedule inside ``Trainer.train()``.

    from netslim.integrations.hf_trainer import NetslimCallback
    from netslim.structural.config import Channels

    callback = NetslimCallback(Channels(ratio=0.3, ignore=("bert.embeddings",)), schedule="iterative")
    Trainer(model=model, args=args, train_dataset=train, callbacks=[callback]).train()
    netslim.export.save_pretrained_pruned(model, "out")   # reloads with AutoModelFor*.from_pretrained

The schedule (one-shot, iterative, AGP; any unstructured or structural config) is a
:class:`netslim.integrations.session.PruningSession`. Pruning happens in ``on_train_begin`` (step
0) and ``on_step_end``, after the optimizer stepped; after a structural step the Trainer's
optimizer is pointed at the new parameters with their Adam moments sliced to the kept channels,
so the learning-rate schedule and the optimizer's memory carry on. Structural tracing needs
example inputs: given, or the first two rows of the first training batch (labels dropped).
Data-driven criteria read the Trainer's training batches with the model's own loss.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from netslim.integrations.session import PruningSession, example_from_batch


def _model_loss(model: Any, batch: dict) -> Any:
    return model(**batch).loss


class NetslimCallback(TrainerCallback):
    """Prunes ``model`` during ``Trainer.train()`` per ``config`` and ``schedule``.

    Keyword arguments are those of :class:`PruningSession` (``schedule``, ``start_step``,
    ``end_step``, ``rounds``, ``update_every``, ``example_inputs``); anything else goes to
    :func:`netslim.prune_`. ``history`` lists the pruning steps that ran.
    """

    def __init__(self, config: Any, **kwargs: Any):
        session_keys = ("schedule", "start_step", "end_step", "rounds", "update_every")
        session = {k: kwargs.pop(k) for k in session_keys if k in kwargs}
        example = kwargs.pop("example_inputs", None)
        kwargs.setdefault("loss", _model_loss)
        self.session = PruningSession(
            config, example_inputs=example, prune_kwargs=kwargs, **session
        )
        self._loader: Any = None
        self._example: Any = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.session.history

    def _example_inputs(self, model: Any) -> Any:
        if self.session.example_inputs is not None or self._loader is None:
            return None
        if self._example is None:
            from netslim.core.batches import to_device

            device = next(model.parameters()).device
            self._example = to_device(example_from_batch(next(iter(self._loader))), device)
        return self._example

    def _run(self, model: Any, step: int, optimizer: Any) -> None:
        if model is None or self.session.done:
            return
        self.session.on_step(
            model,
            step,
            optimizer=optimizer,
            example_inputs=self._example_inputs(model),
            train_loader=self._loader,
        )

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._loader = kwargs.get("train_dataloader")
        self.session.plan(state.max_steps)
        self._run(model, state.global_step, optimizer)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._run(model, state.global_step, optimizer)

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is not None:
            self.session.finish(
                model, optimizer=optimizer, example_inputs=self._example_inputs(model)
            )
