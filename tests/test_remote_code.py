"""Checkpoints load through AutoModel without the package, and give the same logits."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.checkpoint import build_checkpoint
from hf_mtbert.inference import tokenize_for_task

PAIRS = (["How do I learn Python?", "A man plays a guitar."], ["What is the best way to learn Python?", "A cat."])


def task_inputs(tokenizer, config):
    out = {}
    for name in config.task_names:
        spec = config.get_task(name)
        texts_b = PAIRS[1] if spec.input == "pair" else None
        out[name] = tokenize_for_task(tokenizer, spec, PAIRS[0], texts_b)
    return out


@pytest.fixture(scope="module")
def checkpoint(minilm_path, tmp_path_factory):
    return build_checkpoint(minilm_path, tmp_path_factory.mktemp("ckpt") / "mtbert")


def test_checkpoint_files(checkpoint):
    files = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_mtbert.py", "modeling_mtbert.py",
            "tokenizer_config.json"} <= files
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "mtbert"
    assert config["auto_map"] == {"AutoConfig": "configuration_mtbert.MultiTaskBertConfig",
                                  "AutoModel": "modeling_mtbert.MultiTaskBertModel"}
    for name in ("configuration_mtbert.py", "modeling_mtbert.py"):
        source = (checkpoint / name).read_text()
        assert "hf_mtbert" not in source, f"{name} must not import the package"


BLOCKED_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["hf_mtbert"] = None  # the package cannot be imported in this process
    try:
        import hf_mtbert  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_mtbert was importable")
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    path, inputs_file, out_file = sys.argv[1:]
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    AutoTokenizer.from_pretrained(path)
    inputs = torch.load(inputs_file)
    with torch.no_grad():
        logits = {task: model(task=task, **batch).logits for task, batch in inputs.items()}
    torch.save({"logits": logits, "config_class": type(config).__name__, "model_module": type(model).__module__},
               out_file)
    """
)


def test_round_trip_without_package(checkpoint, tmp_path):
    model = MultiTaskBertModel.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    inputs = task_inputs(tokenizer, model.config)
    with torch.no_grad():
        expected = {task: model(task=task, **batch).logits for task, batch in inputs.items()}
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "load.py"
    script.write_text(BLOCKED_LOAD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, str(script), str(checkpoint), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert got["config_class"] == "MultiTaskBertConfig"
    assert got["model_module"].startswith("transformers_modules.")  # loaded from the checkpoint's own files
    assert set(got["logits"]) == {"sst", "quora", "sts"}
    for task, logits in expected.items():
        torch.testing.assert_close(got["logits"][task], logits, atol=1e-6, rtol=0, msg=task)


def test_auto_classes_work_without_trust_remote_code_when_imported(checkpoint):
    config = AutoConfig.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint)
    assert isinstance(config, MultiTaskBertConfig)
    assert isinstance(model, MultiTaskBertModel)


def test_trainer_style_save_load_keeps_heads(checkpoint, tmp_path):
    model = MultiTaskBertModel.from_pretrained(checkpoint)
    with torch.no_grad():
        model.heads["sst"].classifier.bias.add_(1.0)
    model.save_pretrained(tmp_path / "again")
    again = MultiTaskBertModel.from_pretrained(tmp_path / "again")
    torch.testing.assert_close(again.heads["sst"].classifier.bias, model.heads["sst"].classifier.bias)


def test_hub_id_offline_fails_fast_with_clear_message(tmp_path):
    code = textwrap.dedent(
        """
        from hf_mtbert import MultiTaskBertModel
        try:
            MultiTaskBertModel.from_pretrained("google-bert/bert-base-uncased")
        except OSError as err:
            print("ERROR:", err)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - start
    assert "ERROR: 'google-bert/bert-base-uncased' is not a local folder and HF_HUB_OFFLINE is set" in result.stdout, (
        result.stdout + result.stderr[-2000:]
    )
    assert "Retrying" not in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f}s: it must not retry the network"


def test_tasks_survive_round_trip(checkpoint):
    config = MultiTaskBertConfig.from_pretrained(checkpoint)
    assert config.task_names == ["sst", "quora", "sts"]
    assert config.get_task("sts").label_range == (0.0, 5.0)
