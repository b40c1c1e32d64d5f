"""``--data`` beyond the built-in sets: image-folder trees and ``hf:`` datasets directories, made
in a temporary directory; preprocessing follows the model; the CLI runs end to end on a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from netslim.data import DataOptions, dataset_info, load_dataset, loader_info, make_loaders
from netslim.errors import ConfigError, DataError
from netslim.models.spec import build_model

PIL = pytest.importorskip("PIL.Image")
CLASSES = ("ant", "bee", "cow")


def _image(label: int, rng: np.random.Generator, size=(20, 24), mode="L") -> PIL.Image:
    """A noisy image whose bright stripe position says the class (learnable in a few steps)."""
    pixels = rng.integers(0, 60, size, dtype=np.uint8)
    pixels[:, label * 6 : label * 6 + 6] += 150
    image = PIL.fromarray(pixels, "L")
    return image if mode == "L" else image.convert(mode)


def _tree(root: Path, splits=(("train", 8), ("val", 3)), mode="L") -> Path:
    rng = np.random.default_rng(0)
    for split, count in splits:
        for label, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True)
            for i in range(count):
                _image(label, rng, mode=mode).save(folder / f"{i}.png")
    return root


def _prune_on_tree(tmp_path: Path, spec: str, ratio: str, *flags: str) -> tuple[Path, dict]:
    """``netslim prune SPEC --method channel`` on a three-class RGB tree (20x24 images, train/
    and val/) into ``tmp_path/run``: the folder and its report."""
    from netslim.cli.main import main

    root, out = _tree(tmp_path / "tree", mode="RGB"), tmp_path / "run"
    argv = ["prune", spec, "--method", "channel", "--ratio", ratio, "--data", str(root)]
    flags = ("--batch-size", "8", "--no-latency", "--no-progress", "--out", str(out), *flags)
    assert main([*argv, *flags]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_folder_train_val_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    info = dataset_info(str(root))
    assert (info.num_classes, info.input_shape) == (3, (1, 20, 24))
    model = build_model("zoo:lenet5", num_classes=3)
    train, test = make_loaders(str(root), batch_size=4, model=model)
    assert (len(train.dataset), len(test.dataset)) == (24, 9)
    # A zoo model gets its 28x28 input, normalised with statistics measured on the data.
    assert loader_info(test).input_shape == (1, 28, 28)
    images = train.dataset.tensors[0]
    assert abs(float(images.mean())) < 0.1 and abs(float(images.std()) - 1) < 0.1
    # Labels follow the sorted class folders.
    assert sorted(set(test.dataset.tensors[1].tolist())) == [0, 1, 2]
    assert test.dataset.tensors[1][0] == 0


def test_folder_split_ratio_and_bad_input(tmp_path: Path) -> None:
    root = _tree(tmp_path / "flat", splits=((None, 10),))
    train = load_dataset(str(root), "train", options=DataOptions(val_split=0.3))
    test = load_dataset(str(root), "test", options=DataOptions(val_split=0.3))
    assert (len(train), len(test)) == (21, 9)  # 3 of every 10 held out, per class
    assert len(load_dataset(str(root), "test")) == 6  # default 0.2
    with pytest.raises(ConfigError, match="val-split"):
        dataset_info(str(root), options=DataOptions(val_split=1.5))
    tree = _tree(tmp_path / "tree")
    with pytest.raises(ConfigError, match="val-split applies"):
        dataset_info(str(tree), options=DataOptions(val_split=0.2))
    for split in ("train", "val"):
        (tmp_path / "empty" / split / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        dataset_info(str(tmp_path / "empty"))


def test_preprocessing_follows_the_model(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    root = _tree(tmp_path / "rgb", mode="RGB")
    timm_model = build_model("timm:resnet18", num_classes=3)
    test = load_dataset(str(root), "test", model=timm_model)
    assert test.info.input_shape == (3, 224, 224) and "timm" in test.info.preprocessing
    plain = build_model("torchvision:resnet18", num_classes=3)
    test = load_dataset(str(root), "test", model=plain)
    assert test.info.input_shape == (3, 20, 24)  # the data's own size, no weights named
    from netslim.data.preprocess import _torchvision_weights

    preset = _torchvision_weights("ResNet18_Weights.IMAGENET1K_V1")
    out = preset.transform(_image(0, np.random.default_rng(0), mode="RGB"))
    assert out.shape == (3, 224, 224) and preset.input_shape == (3, 224, 224)


def test_cli_prunes_on_a_folder_and_scores_its_val_split(tmp_path: Path, capsys) -> None:
    from netslim.cli.main import main

    out, report = _prune_on_tree(tmp_path, "zoo:lenet5", "0.5", "--epochs", "1")
    assert report["data"]["test_samples"] == 9 and report["data"]["num_classes"] == 3
    assert report["data"]["input_shape"] == [3, 28, 28]
    import netslim

    model = netslim.load(out / "model")  # rebuilt for 3 classes and 3 channels from its spec
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 3)
    from pruned import param_count

    dense = build_model("zoo:lenet5", num_classes=3, in_channels=3)
    assert param_count(model) < 0.6 * param_count(dense)  # channels went (ratio 0.5)
    capsys.readouterr()
    assert main(["eval", str(out), "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out.split("\n\n")[0].rsplit("}", 1)[0] + "}")
    assert measured["accuracy"] == pytest.approx(report["accuracy_after"])
    assert report["example_shape"] == [1, 3, 28, 28]  # the data's, recorded for eval and export


def test_an_export_takes_the_shape_the_job_ran_at(tmp_path: Path, capsys) -> None:
    """A torchvision model pruned on 20x24 images (no --example-shape: the data's) exports at
    that size, not at its usual 224x224, and eval of the export reads the data; an export at
    another size is refused with one line naming the flag."""
    pytest.importorskip("onnxruntime")
    from netslim.cli.main import main

    out, report = _prune_on_tree(tmp_path, "torchvision:resnet18", "0.5")
    root = tmp_path / "tree"
    assert report["example_shape"] == [1, 3, 20, 24]
    assert main(["export", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "export"), "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert measured["accuracy"] == pytest.approx(report["accuracy_after"], abs=1e-9)
    # compact carries the job's shape and data on: its result evaluates and exports the same
    compacted = tmp_path / "compacted"
    assert main(["compact", str(out), "--no-latency", "--out", str(compacted)]) == 0
    assert json.loads((compacted / "compact.json").read_text())["example_shape"] == [1, 3, 20, 24]
    capsys.readouterr()
    assert main(["eval", str(compacted), "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert measured["accuracy"] == pytest.approx(report["accuracy_after"], abs=1e-9)
    assert main(["export", str(compacted)]) == 0
    assert main(["eval", str(compacted / "export"), "--no-latency"]) == 0
    wrong = tmp_path / "wrong"
    assert main(["export", str(out), "--example-shape", "1,3,32,32", "--out", str(wrong)]) == 0
    capsys.readouterr()
    assert main(["eval", str(wrong / "model.onnx"), "--data", str(root), "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "takes inputs of Nx3x32x32" in err and "--example-shape 1,3,20,24" in err, err


datasets = pytest.importorskip("datasets")


def test_hf_image_dataset_without_validation_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [i % 3 for i in range(30)]
    features = datasets.Features(
        {"img": datasets.Image(), "kind": datasets.ClassLabel(names=list(CLASSES))}
    )
    data = datasets.Dataset.from_dict(
        {"img": [_image(y, rng) for y in labels], "kind": labels}, features=features
    )
    data.save_to_disk(str(tmp_path / "imgs"))
    spec = f"hf:{tmp_path / 'imgs'}"
    info = dataset_info(spec)
    assert (info.num_classes, info.input_shape) == (3, (1, 20, 24))
    train, test = make_loaders(spec, batch_size=4, model=build_model("zoo:lenet5", num_classes=3))
    assert (len(train.dataset), len(test.dataset)) == (24, 6)
    assert loader_info(train).input_shape == (1, 28, 28)
    with pytest.raises(ConfigError, match="--label-column 'nope'"):
        dataset_info(spec, options=DataOptions(label_column="nope"))


def _tiny_text_model(directory: Path, head: bool = True) -> str:
    """A tiny BERT with its tokenizer: a sequence classifier, or the base model (``head``)."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "very", "a"]
    directory.mkdir(parents=True)
    vocab = {word: index for index, word in enumerate(words)}
    transformers.BertTokenizer(vocab=vocab).save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=2,
        architectures=["BertForSequenceClassification" if head else "BertModel"],
    )  # fmt: skip
    kind = transformers.BertForSequenceClassification if head else transformers.BertModel
    kind(config).save_pretrained(directory)
    return f"hf:{directory}"


def test_hf_text_dataset_is_tokenised_with_the_models_tokenizer(tmp_path: Path) -> None:
    texts = ["a good film", "a very bad film", "good", "bad bad", "very good film", "bad"]
    labels = [1, 0, 1, 0, 1, 0]
    split = datasets.Dataset.from_dict({"sentence": texts, "label": labels})
    datasets.DatasetDict({"train": split, "validation": split.select(range(2))}).save_to_disk(
        str(tmp_path / "text")
    )
    spec = f"hf:{tmp_path / 'text'}"
    model = build_model(_tiny_text_model(tmp_path / "model"))
    train, test = make_loaders(spec, batch_size=2, model=model)
    ids, y = next(iter(test))
    assert ids.shape == (2, 6)  # [CLS] a very bad film [SEP]: the longest training sentence
    assert ids[0].tolist() == [2, 9, 5, 7, 3, 0] and y.tolist() == [1, 0]
    assert loader_info(train).num_classes == 2
    with pytest.raises(ConfigError, match="tokenizer"):
        make_loaders(spec, model=build_model("zoo:lenet5"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--val-split", "0.2"], "--val-split applies to image folders"),
        (["--text-column", "x"], "--text-column applies to hf: data sets"),
    ],
)
def test_data_source_flags_that_do_not_apply_are_refused(tmp_path: Path, capsys, flags, message):
    from netslim.cli.main import main

    out = tmp_path / "run"
    args = ["prune", "zoo:lenet300", "--data", "synthetic", "--out", str(out), *flags]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_prunes_a_text_model_on_an_hf_text_set(tmp_path: Path) -> None:
    from netslim.cli.main import main

    texts = ["a good film", "a very bad film", "good", "bad bad", "very good film", "bad"] * 2
    split = datasets.Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0, 1, 0] * 2})
    split.save_to_disk(str(tmp_path / "text"))  # no validation split: --val-split holds out
    model = _tiny_text_model(tmp_path / "model")
    out = tmp_path / "run"
    code = main(
        ["prune", model, "--method", "unstructured", "--ratio", "0.5", "--data",
         f"hf:{tmp_path / 'text'}", "--val-split", "0.5", "--epochs", "1", "--finetune-epochs",
         "0", "--batch-size", "4", "--no-latency", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["test_samples"] == 6 and report["data"]["input_shape"][0] in (5, 6)
    assert 0.0 <= report["accuracy_after"] <= 1.0
    from pruned import weights, zero_fraction

    import netslim

    saved = zero_fraction(weights(netslim.load(out / "model", trust_code=True), (torch.nn.Linear,)))
    assert saved > 0.4, saved  # ratio 0.5 of the prunable weights


def test_a_base_text_model_with_labelled_data_is_told_to_take_a_head(tmp_path, capsys) -> None:
    """A Hugging Face base model gives hidden states, not logits: with labelled data the job
    stops before any work and says how to give it a classification head."""
    from netslim.cli.main import main

    texts = ["a good film", "a very bad film", "good", "bad bad"]
    split = datasets.Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0]})
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "t"))
    model = _tiny_text_model(tmp_path / "model", head=False)
    capsys.readouterr()  # the data set's saving bars
    out = tmp_path / "run"
    argv = ["prune", model, "--data", f"hf:{tmp_path / 't'}", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar
    assert err.startswith("netslim: error:") and "holds no classifier logits" in err
    assert "AutoModelForSequenceClassification.from_pretrained(DIR, num_labels=N)" in err
    assert not out.exists()


def test_lottery_and_sensitivity_read_a_folder_as_prune_does(tmp_path: Path, capsys) -> None:
    """``netslim lottery`` and ``netslim sensitivity`` on a three-class RGB tree split by
    --val-split: the zoo model is built for its channels and classes, the example is one sample
    of it. Before, both built zoo:lenet5 for one channel and failed on the first batch, and
    neither took --val-split."""
    from netslim.cli.main import main

    root = _tree(tmp_path / "tree", splits=(("", 8),), mode="RGB")
    data = ["--data", str(root), "--val-split", "0.25", "--batch-size", "8"]
    lottery = tmp_path / "lottery"
    args = ["--rounds", "1", "--iterations", "2", "--controls", "--out", str(lottery)]
    assert main(["lottery", "zoo:lenet5", *data, *args]) == 0
    import netslim

    ticket = netslim.load(lottery / "ticket")
    assert ticket(torch.zeros(2, 3, 28, 28)).shape == (2, 3)
    scan = tmp_path / "scan"
    args = ["--epochs", "0", "--ratios", "0.5", "--no-progress", "--out", str(scan)]
    capsys.readouterr()
    assert main(["sensitivity", "zoo:lenet5", *data, *args]) == 0
    units = json.loads((scan / "sensitivity.json").read_text())["units"]
    assert units and all(len(u["accuracy"]) == 1 for u in units), units  # one ratio each
    # the proposal's prune line carries the data flags
    assert f"--data {root} --val-split 0.25" in capsys.readouterr().out


def test_eval_of_an_export_reads_the_data_as_the_job_did(tmp_path: Path, capsys) -> None:
    """A timm model's job resized the 20x24 images to its data config's 160x160: eval of its
    ONNX export builds the job's architecture from the saved spec and reads the data the same
    way. Before, it read them without the model (at 20x24) and the export refused them."""
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    from netslim.cli.main import main

    flags = ("--epochs", "1", "--finetune-epochs", "0")
    out, report = _prune_on_tree(tmp_path, "timm:test_resnet", "0.3", *flags)
    assert report["example_shape"] == [1, 3, 160, 160]
    assert main(["export", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "export"), "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert measured["format"] == "onnx"
    assert measured["accuracy"] == pytest.approx(report["accuracy_after"], abs=1e-9)
    # an export written away from its job reads the data the same way, even once the job
    # folder is gone: the job's report and spec travel in the export's job.json. Before, eval
    # of it found no job, read the images at 20x24 and the export refused them.
    elsewhere = tmp_path / "elsewhere"
    assert main(["export", str(out), "--out", str(elsewhere)]) == 0
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["eval", str(elsewhere), "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert measured["accuracy"] == pytest.approx(report["accuracy_after"], abs=1e-9)
