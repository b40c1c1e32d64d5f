"""When pruning reconstructs by default: one rule for ``netslim prune`` and ``prune_``."""

from __future__ import annotations

from netslim.errors import ConfigError

CHANNEL_KINDS = ("channel", "slimming")  # removal of whole channels (ThiNet-style refit)
METHOD_KINDS = (*CHANNEL_KINDS, "unstructured")  # masks (OBS update per row)


def check_requested(value: object) -> bool | None:
    """A config's ``reconstruct``: True, False or None (auto); anything else is refused."""
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"reconstruct must be True, False or None (auto), got {value!r}")
    return value


def auto_reconstruct(
    requested: bool | None, *, method_kind: str, has_calibration: bool, finetunes_after: bool
) -> bool:
    """Whether to refit the pruned layers: ``requested`` when given, else the measured default.

    docs/recovery.md ("What wins, and the defaults"): for channel pruning the refit keeps most of
    the dense accuracy where plain removal collapses, and the advantage survives short
    fine-tuning, so channel/slimming reconstruct whenever calibration batches exist. For
    unstructured masks it rescues a one-shot model, but fine-tuning afterwards erases the gain
    (and over long schedules it cost accuracy), so unstructured reconstructs only when calibration
    batches exist and no fine-tuning follows in the same call. ``prune_`` never fine-tunes
    (``finetunes_after=False``); the prune job passes ``--finetune-epochs > 0``.

    Explicit True without calibration batches is a ConfigError naming the fix.
    """
    if method_kind not in METHOD_KINDS:
        raise ConfigError(
            f"reconstruction refits {', '.join(METHOD_KINDS)} pruning, not {method_kind!r}"
        )
    check_requested(requested)
    if requested is True and not has_calibration:
        raise ConfigError(
            "reconstruct=True refits the pruned layers on calibration batches and none were "
            "given: pass prune_(model, config, train_loader=loader) (labels are not used), or "
            "--data on the command line"
        )
    if requested is not None:
        return requested
    if not has_calibration:
        return False
    return method_kind in CHANNEL_KINDS or not finetunes_after
