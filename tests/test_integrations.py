"""netslim schedules inside other training loops: the session's plan, the Hugging Face Trainer
callback (a real two-step ``Trainer.train()``), the Lightning callback, and pruned models saved
with ``save_pretrained`` and reloaded with the stock ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from netslim.errors import ConfigError
from netslim.integrations.session import PruningSession
from netslim.structural.config import Channels
from netslim.unstructured.config import Unstructured


def _adam_state_matches(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Every optimizer parameter is a live model parameter and its state has its shape."""
    live = {id(p) for p in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in held} == live
    for p in held:
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, torch.Tensor) and value.dim():
                assert value.shape == p.shape


def test_session_plans_each_schedule() -> None:
    assert PruningSession(Unstructured(ratio=0.5)).plan(100) == [(0, 0.5)]
    iterative = PruningSession(Channels(ratio=0.875), schedule="iterative", rounds=3).plan(100)
    assert [s for s, _ in iterative] == [0, 26, 53]
    assert [r for _, r in iterative] == pytest.approx([0.5, 0.75, 0.875])
    agp = PruningSession(Unstructured(ratio=0.8), schedule="agp", update_every=20).plan(100)
    assert [s for s, _ in agp] == [20, 40, 60, 80]
    ratios = [r for _, r in agp]
    assert ratios == sorted(ratios) and ratios[-1] == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="end_step"):
        PruningSession(Unstructured(ratio=0.5), schedule="agp").plan(None)
    with pytest.raises(ConfigError, match="oneshot"):
        PruningSession(Channels(target_macs=0.5), schedule="iterative")
    with pytest.raises(ConfigError, match="unknown schedule"):
        PruningSession(Unstructured(ratio=0.5), schedule="cubic")


def test_example_from_batch_drops_labels_and_keeps_keyword_inputs() -> None:
    from collections import UserDict

    from netslim.integrations.session import example_from_batch

    ids = torch.arange(12).reshape(4, 3)
    batch = UserDict({"input_ids": ids, "attention_mask": ids > 0, "labels": torch.zeros(4)})
    example = example_from_batch(batch)  # transformers' BatchEncoding is a UserDict
    assert type(example) is dict and set(example) == {"input_ids", "attention_mask"}
    assert torch.equal(example["input_ids"], ids[:2])
    assert torch.equal(example_from_batch((ids, torch.zeros(4)))[0], ids[:2])


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)
    )


def test_structural_iterative_reaches_the_cumulative_ratio_and_keeps_adam_state() -> None:
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    session = PruningSession(Channels(ratio=0.75), schedule="iterative", rounds=2, end_step=4)
    session.plan(None)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    for step in range(6):
        session.on_step(model, step, optimizer=optimizer, example_inputs=(x[:2],))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()  # fails on any stale parameter or mis-shaped moment
        _adam_state_matches(optimizer, model)
    # 0.5 of 32 at step 0, then 1 - 0.25/0.5 = half of the 16 left at step 2: 8 of 32 kept.
    assert model[0].out_features == 8 and model[2].out_features == 8
    assert [h["step"] for h in session.history] == [0, 2]
    assert session.history[1]["optimizer_params"] > 0


transformers = pytest.importorskip("transformers")


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 16):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 100, (n, 10), generator=generator)
        self.labels = self.ids[:, 0] % 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def _trainer(model, tmp_path, callback, steps=2):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=steps, per_device_train_batch_size=4,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=True, seed=0,
    )  # fmt: skip
    return transformers.Trainer(
        model=model, args=args, train_dataset=_Tokens(), callbacks=[callback]
    )


def test_trainer_callback_removes_heads_and_ffn_mid_training(tmp_path: Path) -> None:
    from netslim.export import save_pretrained_pruned
    from netslim.integrations.hf_trainer import NetslimCallback

    model = _tiny_classifier()
    callback = NetslimCallback(Channels(ratio=0.5, ignore=("bert.embeddings",)), start_step=1)
    trainer = _trainer(model, tmp_path, callback)
    trainer.train()  # step 2 runs on the pruned model with the handed-over Adam state
    assert [h["step"] for h in callback.history] == [1]
    assert callback.history[0]["optimizer_params"] > 0
    layers = model.bert.encoder.layer
    assert sum(layer.attention.self.num_attention_heads for layer in layers) < 8
    assert sum(layer.intermediate.dense.out_features for layer in layers) < 128
    _adam_state_matches(trainer.optimizer.optimizer, model)

    save_pretrained_pruned(model, tmp_path / "pruned")
    import netslim.export.hf_shapes  # noqa: F401  registers the pruned architectures

    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    batch = _Tokens()[0]
    inputs = {k: batch[k][None] for k in ("input_ids", "attention_mask")}
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_trainer_callback_agp_unstructured(tmp_path: Path) -> None:
    from netslim.core.masks import sparsity_report
    from netslim.integrations.hf_trainer import NetslimCallback

    model = _tiny_classifier()
    callback = NetslimCallback(
        Unstructured(ratio=0.6, ignore=("bert.embeddings",)), schedule="agp", end_step=3,
        update_every=1,
    )  # fmt: skip
    _trainer(model, tmp_path, callback, steps=3).train()
    ratios = [h["ratio"] for h in callback.history]
    assert len(ratios) == 3 and ratios == sorted(ratios) and ratios[-1] == pytest.approx(0.6)
    assert sparsity_report(model)["overall"]["sparsity"] == pytest.approx(0.6, abs=0.01)


def test_lightning_callback_prunes_channels_during_fit(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")
    from netslim.integrations.lightning import NetslimCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(32, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    )
    module = Module()
    callback = NetslimCallback(Channels(ratio=0.75), schedule="iterative", rounds=2, end_step=4)
    trainer = lightning.Trainer(
        max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
        callbacks=[callback],
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    assert [h["step"] for h in callback.history] == [0, 2]
    assert module.net[0].out_features == 8
    _adam_state_matches(trainer.optimizers[0], module)


def test_uniform_head_count_the_config_cannot_build_reloads(tmp_path: Path) -> None:
    """3 of 4 heads per layer: the engine writes 3 into the config, which BERT cannot build
    (32 is not a multiple of 3); the save records the shapes and the reload is exact."""
    from netslim.api import prune_
    from netslim.export import save_pretrained_pruned

    model = _tiny_classifier().eval()
    batch = _Tokens()[0]
    inputs = {k: batch[k][None] for k in ("input_ids", "attention_mask")}
    config = Channels(ratio=0.25, scope="local", ignore=("bert.embeddings", "bert.pooler"))
    prune_(model, config, example_inputs=inputs)
    assert [layer.attention.self.num_attention_heads for layer in model.bert.encoder.layer] == [
        3,
        3,
    ]
    save_pretrained_pruned(model, tmp_path / "pruned")
    import netslim.export.hf_shapes  # noqa: F401

    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, model(**inputs).logits)
