"""The ``netslim lottery`` job: data, model, a resumable :class:`LotteryRun`, and its files
(``lottery.json``, ``lottery.png``, ``checkpoints/``, ``ticket/``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netslim.jobs.model_data import DataSettings


def lottery_job(
    source: DataSettings,
    config: Any,
    *,
    val_size: int | None,
    out: Path,
    settings: dict[str, Any],
    weights: str | None = None,
) -> dict[str, Any]:
    """Run the search ``config`` (a :class:`netslim.lottery.Lottery`) on ``source``'s model and
    data; hold out ``val_size`` training samples for early stopping (default 10 %).
    ``settings`` is recorded."""
    from netslim.jobs.model_data import model_and_data
    from netslim.lottery.data import split_validation
    from netslim.lottery.export import export_ticket
    from netslim.lottery.procedure import LotteryRun
    from netslim.lottery.report import progress_line, write_plot
    from netslim.training import seed_everything

    started = time.perf_counter()
    model_spec, seed = source.model, source.seed
    seed_everything(seed)
    model, train, test = model_and_data(source)
    size = len(train.dataset) // 10 if val_size is None else val_size
    val = None
    if size > 0:
        train, val = split_validation(train, size, seed=seed)
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
