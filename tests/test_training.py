"""netslim.training: the loop, its hooks (regularizer, distillation, on_step), seeding, evaluation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, TensorDataset

from netslim.data import make_loaders
from netslim.errors import ConfigError
from netslim.models import get_zoo_model
from netslim.training import TrainResult, evaluate, seed_everything, train


@pytest.fixture(scope="module")
def loaders() -> tuple[DataLoader, DataLoader]:
    return make_loaders("synthetic", batch_size=64, limit_train=512, limit_test=500, seed=0)


def _fresh(seed: int = 0) -> tuple[nn.Module, DataLoader]:
    """A seeded model and a train loader whose shuffling restarts from ``seed``."""
    seed_everything(seed)
    train_loader, _ = make_loaders("synthetic", batch_size=64, limit_train=512, seed=seed)
    return get_zoo_model("lenet300"), train_loader


def test_training_beats_chance(loaders) -> None:
    model, train_loader = _fresh()
    before = evaluate(model, loaders[1])
    result = train(model, train_loader, epochs=3, progress=False)
    after = evaluate(model, loaders[1])
    assert isinstance(result, TrainResult) and result.steps == 3 * len(train_loader)
    assert len(result.losses) == 3 and result.losses[-1] < result.losses[0] and result.seconds > 0
    assert before < 0.3 and after > 0.8


def test_seeded_runs_are_bit_identical(loaders) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        model, train_loader = _fresh(seed)
        train(model, train_loader, epochs=1, optimizer="sgd", lr=0.05)
        return model.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_on_step_called_once_per_step(loaders) -> None:
    model, train_loader = _fresh()
    seen: list[int] = []
    result = train(model, train_loader, epochs=2, on_step=seen.append)
    assert seen == list(range(1, 2 * len(train_loader) + 1)) and result.steps == len(seen)


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "none"])
def test_schedules_decay_stepwise_to_zero(monkeypatch: pytest.MonkeyPatch, scheduler: str) -> None:
    model, train_loader = _fresh()
    seen: list[float] = []
    step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    train(model, train_loader, epochs=2, optimizer="sgd", lr=0.1, scheduler=scheduler,
          progress=False)  # fmt: skip
    total = 2 * len(train_loader)
    expected = {
        "cosine": [0.05 * (1 + math.cos(math.pi * k / total)) for k in range(total)],
        "linear": [0.1 * (1 - k / total) for k in range(total)],
        "none": [0.1] * total,
    }[scheduler]
    assert seen == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_max_steps_stops_early(loaders) -> None:
    model, train_loader = _fresh()
    seen: list[int] = []
    result = train(model, train_loader, epochs=5, max_steps=10, on_step=seen.append)
    assert result.steps == 10 and seen[-1] == 10 and len(result.losses) == 2
    assert train(model, train_loader, epochs=3, max_steps=0).steps == 0


def test_regularizer_is_added(loaders) -> None:
    def first_layer_mean_abs(strength: float) -> float:
        model, train_loader = _fresh()

        def l1(m: nn.Module) -> torch.Tensor:
            return strength * sum(
                p.abs().sum() for n, p in m.named_parameters() if n.endswith("weight")
            )

        train(model, train_loader, epochs=3, lr=1e-2, regularizer=l1)
        return float(model[1].weight.detach().abs().mean())

    assert first_layer_mean_abs(1.0) < 0.1 * first_layer_mean_abs(0.0)


def test_own_loss_replaces_cross_entropy_on_unlabelled_dict_batches() -> None:
    """``train(loss=fn)``: the user's loss is what is minimised, on batches cross-entropy could
    not read (dicts, no labels), moved to the model's device; the regularizer still adds."""
    seed_everything(0)
    model = nn.Linear(4, 1)
    target = torch.tensor([[3.0]])
    batches = [{"x": torch.ones(8, 4)} for _ in range(20)]
    calls: list[torch.device] = []

    def loss(m: nn.Module, batch: dict) -> torch.Tensor:
        calls.append(batch["x"].device)
        return (m(batch["x"]) - target).pow(2).mean()

    result = train(model, batches, epochs=3, lr=0.1, loss=loss, scheduler="none", progress=False)
    assert len(calls) == result.steps == 60 and set(calls) == {torch.device("cpu")}
    assert result.losses[-1] < 0.01 * result.losses[0]
    with torch.no_grad():
        assert float(model(torch.ones(1, 4))) == pytest.approx(3.0, abs=0.2)
    penalised = train(
        model, batches, epochs=1, lr=0.1, loss=loss, regularizer=lambda m: torch.tensor(5.0),
        scheduler="none", progress=False,
    )  # fmt: skip
    assert 5.0 < penalised.losses[0] < 5.1  # the fitted loss (near 0) + the constant penalty


def test_own_loss_is_checked() -> None:
    model = nn.Linear(4, 1)
    batches = [torch.ones(2, 4)]
    with pytest.raises(ConfigError, match="loss must be callable"):
        train(model, batches, epochs=1, loss="mse")
    with pytest.raises(ConfigError, match="add the distillation term"):
        train(model, batches, epochs=1, loss=lambda m, b: m(b).sum(), teacher=nn.Linear(4, 1))
    with pytest.raises(ConfigError, match="scalar tensor .* of shape \\(2, 1\\)"):
        train(model, batches, epochs=1, loss=lambda m, b: m(b))
    with pytest.raises(ConfigError, match="scalar tensor .* got float"):
        train(model, batches, epochs=1, loss=lambda m, b: 1.0)


def test_distillation_changes_loss_and_leaves_teacher_alone(loaders) -> None:
    teacher, _ = _fresh(seed=7)
    teacher.train()
    frozen = copy.deepcopy(teacher.state_dict())

    def losses(**kwargs) -> list[float]:
        model, train_loader = _fresh()
        return train(model, train_loader, epochs=1, **kwargs).losses

    plain = losses()
    assert losses(teacher=teacher, kd_alpha=0.0) == plain  # alpha 0: distillation switched off
    distilled = losses(teacher=teacher, kd_alpha=0.9, kd_temperature=2.0)
    assert distilled != plain
    assert teacher.training, "the teacher's mode is restored"
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())


class _Mask(nn.Module):
    """A minimal stand-in for netslim.unstructured's WeightMask: a fixed 0/1 buffer."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def test_parametrized_masks_survive_training(loaders) -> None:
    model, train_loader = _fresh()
    layer = model[1]
    mask = (
        torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    ).float()
    parametrize.register_parametrization(layer, "weight", _Mask(mask))
    original = layer.parametrizations.weight.original
    before = original.detach().clone()
    train(model, train_loader, epochs=2, weight_decay=1e-4)
    assert layer.parametrizations.weight.original is original, "parameters must not be rebuilt"
    assert torch.all(layer.weight[mask == 0] == 0)
    assert not torch.equal(original[mask == 1], before[mask == 1])
    assert evaluate(model, loaders[1]) > 0.5


def test_evaluate_restores_modes(loaders) -> None:
    model = get_zoo_model("vgg_small")
    model.train()
    model.features[1].eval()  # a frozen BN, as in fine-tuning
    accuracy = evaluate(model, loaders[1])
    assert 0.0 <= accuracy <= 1.0
    assert model.training and not model.features[1].training
    model.eval()
    evaluate(model, loaders[1])
    assert not model.training


def test_train_restores_modes_and_handles_sgd_without_schedule(loaders) -> None:
    model, train_loader = _fresh()
    model.eval()
    result = train(model, train_loader, epochs=1, optimizer="SGD", scheduler="none", lr=0.05)
    assert not model.training and result.steps == len(train_loader)


def test_zero_epochs_is_a_no_op(loaders) -> None:
    model, train_loader = _fresh()
    before = copy.deepcopy(model.state_dict())
    result = train(model, train_loader, epochs=0)
    assert result.steps == 0 and result.losses == []
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_one_line_per_epoch_when_not_a_tty(loaders, capsys: pytest.CaptureFixture[str]) -> None:
    """#19: in a log (no terminal) one line per epoch: loss, training accuracy, seconds."""
    import re

    model, train_loader = _fresh()
    train(model, train_loader, epochs=2, progress=True)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 2
    pattern = r"epoch (\d)/2: loss \d+\.\d{4}, train accuracy \d+\.\d\d%, \d+\.\d s"
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2"]
    train(model, train_loader, epochs=1, max_steps=2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": -1},
        {"epochs": 1.5},
        {"lr": 0},
        {"lr": -1e-3},
        {"lr": float("nan")},
        {"optimizer": "rmsprop"},
        {"scheduler": "step"},
        {"momentum": 1.0},
        {"weight_decay": -1},
        {"kd_alpha": 1.5},
        {"kd_temperature": 0},
        {"max_steps": -1},
        {"regularizer": 3},
    ],
)
def test_bad_settings(loaders, kwargs: dict) -> None:
    settings = {"epochs": 1, **kwargs}
    with pytest.raises(ConfigError):
        train(get_zoo_model("lenet300"), loaders[0], **settings)


def test_empty_loaders_and_divergence() -> None:
    model = get_zoo_model("lenet300")
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64)))
    with pytest.raises(ConfigError, match="no batches"):
        train(model, empty, epochs=1)
    with pytest.raises(ConfigError, match="no samples"):
        evaluate(model, empty)
    one = DataLoader(TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64)))
    with pytest.raises(ConfigError, match="diverged"):
        train(model, one, epochs=1, regularizer=lambda m: torch.tensor(float("nan")))


def test_seed_everything_rejects_non_integers() -> None:
    with pytest.raises(ConfigError):
        seed_everything("0")  # type: ignore[arg-type]


class _FakeTTY:
    """Collects writes and claims to be a terminal, so the progress bar switches on."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None: ...

    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    fake = _FakeTTY()
    monkeypatch.setattr("sys.stderr", fake)
    model, train_loader = _fresh()
    train(model, train_loader, epochs=2, max_steps=12)
    assert "epoch 1/2" in fake.text and "/12" in fake.text  # tqdm rate-limits redraws
    fake.text = ""
    train(model, train_loader, epochs=1, max_steps=2, progress=False)
    assert fake.text == ""
