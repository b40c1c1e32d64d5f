"""Language-model pruning configs: ``LLMWeights`` (per-weight: magnitude, Wanda, SparseGPT),
``LLMWidth`` (FFN neurons and attention heads) and ``LLMDepth`` (whole blocks). Each accepts
only its own family's methods and knobs; they share one implementation, :class:`LLMPrune`
(any method, kept for existing callers), which the block-by-block engine reads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from netslim.core.config import ConfigBase, choice
from netslim.errors import ConfigError
from netslim.llm.optim import TRAIN_DTYPES
from netslim.llm.reconstruct import DEFAULT_LR, OPTIMIZERS
from netslim.unstructured.nm import validate_nm

WEIGHT_METHODS = ("magnitude", "wanda", "sparsegpt")
METHODS = (*WEIGHT_METHODS, "width", "depth")


def parse_nm(value: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``"2:4"`` / ``(2, 4)`` → ``(2, 4)``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(":")
        try:
            n, m = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"N:M must look like 2:4, got {value!r}") from None
    else:
        try:
            n, m = value
        except (TypeError, ValueError):
            raise ConfigError(f"N:M must be a pair like (2, 4), got {value!r}") from None
    validate_nm(n, m)
    return n, m


def _fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"{what} must be in [0, 1), got {value}: pruning everything leaves no model"
        )
    return float(value)


def _offsets(value: Any) -> dict[str, float]:
    usage = "sparsity_offsets maps linear names to offsets in (-1, 1), e.g. {'q_proj': 0.15}"
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{usage}; got {value!r}")
    for key, offset in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{usage}; got the key {key!r}")
        number = isinstance(offset, (int, float)) and not isinstance(offset, bool)
        if not number or math.isnan(offset) or not -1.0 < offset < 1.0:
            raise ConfigError(f"{usage}; got {key}={offset!r}")
    return {key: float(offset) for key, offset in value.items()}


@dataclass
class LLMPrune(ConfigBase):
    """Prune a decoder-only causal LM one block at a time from calibration activations.

    method: ``magnitude`` | ``wanda`` | ``sparsegpt`` (per-weight, same shapes), ``width`` (FFN
        neurons and attention heads, physically removed), ``depth`` (whole blocks removed).
    sparsity: fraction removed — of each block's weights (magnitude/wanda/sparsegpt), of each
        block's FFN neurons (width), of the blocks (depth, rounded to a count).
    nm: ``(N, M)`` semi-structured pattern for the per-weight methods (then ``sparsity`` is
        implied: ``1 - N/M``).
    head_sparsity: width only: fraction of KV-head groups removed (a GQA group — one KV head and
        its query heads — goes as a whole); defaults to ``sparsity``.
    layer_sparsity: width only: per-block FFN fractions overriding ``sparsity`` (uneven widths
        cannot be expressed by an HF config, so such models reload through ``netslim.llm.load``).
    correct: width only: least-squares refit of the rows that read the pruned units
        (``down_proj``/``o_proj``) so the block output changes least on the calibration data.
        Off by default: with fewer calibration tokens than a few times the FFN width the refit
        overfits them (SmolLM2-135M, 2k tokens, 25% FFN: perplexity 20.9 without, 30.5 with).
    remove: depth only: number of blocks to remove (overrides ``sparsity``).
    damp: SparseGPT damping as a fraction of the mean Hessian diagonal (paper: 1%).
    blocksize: SparseGPT column block for lazy batch updates and adaptive mask selection (128).
    owl: per-weight unstructured only: OWL non-uniform block sparsity (Yin et al., 2024) with
        this maximum shift λ (0: uniform). Blocks with more outlier scores keep more weights;
        the mean over blocks stays ``sparsity``. N:M fixes every group's count, so not with ``nm``.
    owl_m: OWL's outlier threshold: a score ``|W|·‖X‖`` above ``owl_m`` × its layer's mean.
    sparsity_offsets: per-weight unstructured only: linear name (its tail inside the block, e.g.
        ``q_proj``) → offset to the block's sparsity; the block's other linears share the
        opposite amount by size, so every block keeps its sparsity (:mod:`netslim.llm.offsets`).
    reconstruct: per-weight methods: optimizer steps per block after pruning that fit the pruned
        block's output to the dense model's block output on the calibration data (masks fixed;
        0: off). Each step sees ``reconstruct_batch`` sequences.
    reconstruct_lr: learning rate of those steps; ``None``: the optimizer's own default
        (``netslim.llm.reconstruct.DEFAULT_LR``; the defaults of the reconstruction and recovery
        knobs are the settings bench/llm.py chose on a development text).
    reconstruct_batch: calibration sequences per reconstruction step.
    reconstruct_optimizer: ``adam`` or ``adafactor``, the memory-light one (factored moments,
        one gradient alive at a time; its lr is relative to each tensor's RMS). ``None``:
        ``adafactor`` on the streaming path, ``adam`` in memory. On the streaming path Adam's
        moments go to a scratch file in the output folder, not memory (slower: the file's
        traffic). See :mod:`netslim.llm.reconstruct`.
    recover: distillation steps from the dense model after pruning (0: off); see
        :mod:`netslim.llm.distill`. Each step sees ``recover_batch`` sequences. Per-weight
        methods keep their masks: pruned weights stay zero.
    recover_lr: AdamW peak learning rate of the distillation (linear decay to 0).
    recover_batch: sequences per distillation step.
    train_dtype: precision of the reconstruction's and the recovery's forward passes:
        ``float32``, or ``bfloat16`` (autocast: bf16 matrix products, float32 weights and
        optimizer state; the pruned model stays float32). For hardware with fast bf16 matrix
        units (CPUs with AMX, recent GPUs); measure before using it elsewhere: without bf16
        instructions it can be slower than float32. bench/llm.py's notes give what it did to
        speed and perplexity on SmolLM2-135M.
    seed: the order in which the reconstruction and the recovery draw calibration sequences
        (0: the order bench/llm.py measured). Another seed shows how much a result owes to that
        order (bench/llm.py's notes give it for SmolLM2-135M).
    """

    method: str = "wanda"
    sparsity: float = 0.5
    nm: tuple[int, int] | None = None
    head_sparsity: float | None = None
    layer_sparsity: list[float] | None = None
    correct: bool = False
    remove: int | None = None
    damp: float = 0.01
    blocksize: int = 128
    owl: float = 0.0
    owl_m: float = 5.0
    sparsity_offsets: dict[str, float] | None = None
    reconstruct: int = 0
    reconstruct_lr: float | None = None
    reconstruct_batch: int = 4
    reconstruct_optimizer: str | None = None
    recover: int = 0
    recover_lr: float = 2e-4
    recover_batch: int = 2
    train_dtype: str = "float32"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice("LLM method", self.method, METHODS)
        self.sparsity = _fraction(self.sparsity, "sparsity")
        self.nm = parse_nm(self.nm)
        if self.nm is not None:
            if self.method not in WEIGHT_METHODS:
                raise ConfigError(f"N:M applies to {', '.join(WEIGHT_METHODS)}, not {self.method}")
            self.sparsity = 1.0 - self.nm[0] / self.nm[1]
        if self.head_sparsity is not None:
            self.head_sparsity = _fraction(self.head_sparsity, "head_sparsity")
        if self.layer_sparsity is not None:
            self.layer_sparsity = [
                _fraction(v, f"layer_sparsity[{i}]") for i, v in enumerate(self.layer_sparsity)
            ]
        if self.remove is not None and (
            isinstance(self.remove, bool) or not isinstance(self.remove, int) or self.remove < 0
        ):
            raise ConfigError(f"remove must be a non-negative block count, got {self.remove!r}")
        if not isinstance(self.damp, (int, float)) or not self.damp > 0:
            raise ConfigError(f"damp must be > 0, got {self.damp!r}")
        if (
            isinstance(self.blocksize, bool)
            or not isinstance(self.blocksize, int)
            or self.blocksize < 1
        ):
            raise ConfigError(f"blocksize must be a positive int, got {self.blocksize!r}")

        for name in ("reconstruct", "reconstruct_batch", "recover", "recover_batch", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
        if self.reconstruct_batch < 1 or self.recover_batch < 1:
            raise ConfigError("reconstruct_batch and recover_batch must be >= 1")
        positive = ("recover_lr", "owl_m") + (
            () if self.reconstruct_lr is None else ("reconstruct_lr",)
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        self.owl = _fraction(self.owl, "owl")
        if self.owl and (self.method not in WEIGHT_METHODS or self.nm is not None):
            raise ConfigError(
                "owl applies to unstructured wanda/sparsegpt/magnitude: N:M fixes every "
                "group's count, width/depth have their own per-block choices"
            )
        if self.owl and not self.owl < self.sparsity <= 1.0 - self.owl:
            raise ConfigError(
                f"owl={self.owl} must leave every block's sparsity in (0, 1) around {self.sparsity}"
            )
        if self.sparsity_offsets is not None:
            self.sparsity_offsets = _offsets(self.sparsity_offsets)
            if self.method not in WEIGHT_METHODS or self.nm is not None:
                raise ConfigError(
                    "sparsity_offsets applies to unstructured wanda/sparsegpt/magnitude: N:M "
                    "fixes every group's count, width/depth remove whole units"
                )
        if self.reconstruct_optimizer is not None:
            choice("reconstruct_optimizer", self.reconstruct_optimizer, OPTIMIZERS)
        choice("train_dtype", self.train_dtype, TRAIN_DTYPES)
        if self.reconstruct and self.method not in WEIGHT_METHODS:
            raise ConfigError("reconstruct applies to wanda/sparsegpt/magnitude (per-weight)")

    def resolved(self, *, streaming: bool) -> LLMPrune:
        """This config with the automatic reconstruction settings filled in (per-weight methods
        only; the other families have no reconstruction): the optimizer for the storage path
        and its default learning rate. Reports then show what ran."""
        if self.method not in WEIGHT_METHODS:
            return self
        optimizer = self.reconstruct_optimizer or ("adafactor" if streaming else "adam")
        lr = DEFAULT_LR[optimizer] if self.reconstruct_lr is None else self.reconstruct_lr
        return replace(self, reconstruct_optimizer=optimizer, reconstruct_lr=lr)

    @property
    def heads(self) -> float:
        return self.sparsity if self.head_sparsity is None else self.head_sparsity

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nm"] = f"{self.nm[0]}:{self.nm[1]}" if self.nm else None
        return out


_DEFAULTS: dict[str, Any] = {}


def _family_check(config: LLMPrune, family: str, methods: tuple[str, ...], own: set[str]) -> None:
    """``config`` is one family's: its method is one of ``methods`` and every knob outside
    ``own`` keeps its default (a knob of another family would be silently ignored)."""
    if config.method not in methods:
        raise ConfigError(
            f"{family} method must be one of {', '.join(methods)}, got {config.method!r}"
        )
    if not _DEFAULTS:
        _DEFAULTS.update(asdict(LLMPrune()))
    for name, default in _DEFAULTS.items():
        if name in own or name in ("method", "sparsity", "extra"):
            continue
        if getattr(config, name) != default:
            raise ConfigError(f"{name} does not apply to {family} ({type(config).__name__})")


# Knobs of each family (the rest belong to another family and must stay at their defaults).
WEIGHT_KNOBS = {"nm", "damp", "blocksize", "owl", "owl_m", "reconstruct", "reconstruct_lr",
                "reconstruct_batch", "reconstruct_optimizer", "sparsity_offsets", "recover", "recover_lr",
                "recover_batch", "train_dtype"}  # fmt: skip
WIDTH_KNOBS = {"head_sparsity", "layer_sparsity", "correct", "recover", "recover_lr",
               "recover_batch", "train_dtype"}  # fmt: skip
DEPTH_KNOBS = {"remove", "recover", "recover_lr", "recover_batch", "train_dtype"}


@dataclass
class LLMWeights(LLMPrune):
    """Per-weight pruning (same shapes): ``method`` magnitude | wanda | sparsegpt, ``sparsity``
    of each block's weights or an ``nm`` pattern, and the SparseGPT knobs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _family_check(self, "per-weight pruning", WEIGHT_METHODS, WEIGHT_KNOBS)


@dataclass
class LLMWidth(LLMPrune):
    """Width pruning: ``sparsity`` of each block's FFN neurons, ``head_sparsity`` of its KV-head
    groups, physically removed (``correct`` refits the rows that read them)."""

    method: str = "width"

    def __post_init__(self) -> None:
        super().__post_init__()
        _family_check(self, "width pruning", ("width",), WIDTH_KNOBS)


@dataclass
class LLMDepth(LLMPrune):
    """Depth pruning: remove ``remove`` blocks (or ``sparsity`` of them, rounded) with the
    lowest Block Influence."""

    method: str = "depth"

    def __post_init__(self) -> None:
        super().__post_init__()
        _family_check(self, "depth pruning", ("depth",), DEPTH_KNOBS)


def config_for(method: str, **knobs: Any) -> LLMPrune:
    """The family config of ``method`` (``netslim llm --method``)."""
    choice("LLM method", method, METHODS)
    if method == "width":
        return LLMWidth(method=method, **knobs)
    if method == "depth":
        return LLMDepth(method=method, **knobs)
    return LLMWeights(method=method, **knobs)
