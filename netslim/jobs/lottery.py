"""The ``netslim lottery`` job: data, model, a resumable :class:`LotteryRun`, and its files
(``lottery.json``, ``lottery.png``, ``checkpoints/``, ``ticket/``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def lottery_job(
    model_spec: str,
    config: Any,
    *,
    data: str,
    batch_size: int,
    limit_train: int | None,
    limit_test: int | None,
    seed: int,
    val_size: int | None,
    out: Path,
    settings: dict[str, Any],
    weights: str | None = None,
) -> dict[str, Any]:
    """Run the search ``config`` (a :class:`netslim.lottery.Lottery`) on ``model_spec``; hold out
    ``val_size`` training samples for early stopping (default 10 %). ``settings`` is recorded."""
    from netslim.data import make_loaders
    from netslim.lottery.data import split_validation
    from netslim.lottery.export import export_ticket
    from netslim.lottery.procedure import LotteryRun
    from netslim.lottery.report import progress_line, write_plot
    from netslim.models.spec import build_model
    from netslim.training import seed_everything

    started = time.perf_counter()
    train, test = make_loaders(
        data, batch_size=batch_size, limit_train=limit_train, limit_test=limit_test, seed=seed
    )
    size = len(train.dataset) // 10 if val_size is None else val_size
    val = None
    if size > 0:
        train, val = split_validation(train, size, seed=seed)
    seed_everything(seed)
    model = build_model(model_spec)
    if weights:
        from netslim.models.weights import load_weights

        load_weights(model, weights)

    def report(rec: dict[str, Any]) -> None:
        print(progress_line(rec, config.rounds), flush=True)

    search = LotteryRun(
        model,
        config,
        train,
        val_loader=val,
        test_loader=test,
        checkpoint_dir=out / "checkpoints",
        on_round=report,
    )  # checks the rewind iteration and any checkpoint there before writing
    if search.saved:
        print(f"resuming {out / 'checkpoints'}: {search.saved} round(s) already saved", flush=True)
    result = search.run()
    result["settings"] = settings
    result["seconds"] = round(time.perf_counter() - started, 2)
    (out / "lottery.json").write_text(json.dumps(result, indent=2))
    write_plot(result, out / "lottery.png", title=f"{model_spec}: lottery ticket search")
    # the checkpoints were checked against this model spec by LotteryRun
    export_ticket(out / "checkpoints", out / "ticket", trust_code=True)
    return result
