"""Lottery tickets: iterative magnitude pruning with rewinding, and the controls that make it an
experiment (Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020; Renda et al., ICLR 2020).

    from netslim.lottery import Lottery, LotteryRun, export_ticket
    run = LotteryRun(model, Lottery(rounds=5, rate=0.2, controls=("reinit",)), train_loader,
                     val_loader=val, test_loader=test, checkpoint_dir="runs/lt/checkpoints")
    result = run.run()                      # resumes from checkpoint_dir if interrupted
    export_ticket("runs/lt/checkpoints", "runs/lt/ticket")   # netslim.load()-able
"""

from netslim.lottery.config import CONTROLS, Lottery
from netslim.lottery.export import export_ticket, saved_rounds
from netslim.lottery.makers import (
    ChannelMasks,
    MagnitudeMasks,
    MaskMaker,
    available_makers,
    get_maker,
    register_maker,
)
from netslim.lottery.procedure import LotteryRun, run_lottery

__all__ = [
    "CONTROLS",
    "ChannelMasks",
    "Lottery",
    "LotteryRun",
    "MagnitudeMasks",
    "MaskMaker",
    "available_makers",
    "export_ticket",
    "get_maker",
    "register_maker",
    "run_lottery",
    "saved_rounds",
]
