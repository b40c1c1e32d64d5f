"""``netslim llm`` on a GGUF file: dequantized to a float32 Hugging Face folder beside the output,
then pruned exactly as that folder would be; the copy is removed afterwards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).parent))
from test_llm import byte_tokenizer, tiny_llama  # noqa: E402
from tiny_gguf import write_gguf  # noqa: E402

from netslim.llm.io import MANIFEST  # noqa: E402


@pytest.fixture()
def sources(tmp_path):
    """The same tiny LLaMA as a GGUF file (in its own folder) and as a Hugging Face folder."""
    torch.manual_seed(0)
    model, tokenizer = tiny_llama(layers=2), byte_tokenizer()
    (tmp_path / "gguf").mkdir()
    gguf = write_gguf(model, tokenizer, tmp_path / "gguf" / "tiny.gguf")
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 40)
    return gguf, tmp_path / "hf", text


@pytest.mark.parametrize("stream", [False, True])
def test_cli_prunes_a_gguf_file_as_its_hugging_face_folder(sources, tmp_path, capsys, stream):
    from transformers import AutoModelForCausalLM

    from netslim.cli.main import main

    gguf, hf, text = sources
    common = ["--method", "sparsegpt", "--calib", str(text), "--eval", str(text), "--seq-len",
              "32", "--calib-samples", "4", *(["--stream"] if stream else [])]  # fmt: skip
    for source, out in ((gguf, tmp_path / "from_gguf"), (hf, tmp_path / "from_hf")):
        assert main(["llm", str(source), *common, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"read {gguf} (GGUF), dequantized to float32 in " in printed
    ours, theirs = (json.loads((tmp_path / d / MANIFEST).read_text())["report"]
                    for d in ("from_gguf", "from_hf"))  # fmt: skip
    assert ours["source"]["gguf"] == str(gguf) and ours["source"]["dtype"] == "float32"
    assert ours["source"]["seconds"] > 0 and "source" not in theirs
    assert ours["perplexity"]["pruned"]["ppl"] == pytest.approx(
        theirs["perplexity"]["pruned"]["ppl"], rel=1e-5
    )
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "from_gguf")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "from_hf")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    assert not list(tmp_path.glob(".netslim-gguf-*"))  # the float32 copy is gone


def test_a_folder_of_several_gguf_files_is_one_line(sources, tmp_path, capsys):
    from netslim.cli.main import main

    gguf, _, text = sources
    (gguf.parent / "other.gguf").write_bytes(gguf.read_bytes())
    out = tmp_path / "out"
    assert main(["llm", str(gguf.parent), "--calib", str(text), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds several GGUF files (other.gguf, tiny.gguf): give one of them" in err
    assert not out.exists()


def test_the_api_names_the_converter_for_a_gguf_folder(sources, tmp_path):
    from netslim.errors import UnsupportedModelError
    from netslim.llm import LLMPrune, prune_streaming

    gguf, _, _ = sources
    with pytest.raises(UnsupportedModelError, match=r"netslim.llm.from_gguf\("):
        prune_streaming(gguf.parent, tmp_path / "out", LLMPrune("magnitude", 0.5))


def test_windows_the_gguf_cannot_take_fail_before_the_conversion(
    sources, tmp_path, capsys, monkeypatch
):
    """The context comes from the GGUF header: a too-long --seq-len (or a stride past it) is one
    line before the file is dequantized (about 20 s for SmolLM2-135M)."""
    import netslim.llm.gguf as gguf_module
    from netslim.cli.main import main

    gguf, _, text = sources
    assert gguf_module.gguf_context(gguf) == 128  # tiny_llama's max_position_embeddings
    converted: list[Path] = []
    monkeypatch.setattr(gguf_module, "from_gguf", lambda *a: converted.append(a[0]))
    out = tmp_path / "out"
    for extra, words in (
        (["--seq-len", "256"], "--seq-len 256 is longer than the model's context (128 "
         "positions, context_length in the GGUF header)"),
        (["--seq-len", "32", "--stride", "64"], "--stride 64 is longer than the window"),
    ):  # fmt: skip
        assert main(["llm", str(gguf), "--calib", str(text), "--out", str(out), *extra]) == 2
        assert words in capsys.readouterr().err
    assert converted == [] and not out.exists()
