"""push_checkpoint against a local Hub look-alike (tests/hub_server.py): upload, download back, load by repo id."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _helpers import random_batch, rounded
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.hub import push_checkpoint

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
REPO = "test-user/tiny-mtbert"


def save_checkpoint(folder: Path, tokenizer, seed: int) -> MultiTaskBertModel:
    torch.manual_seed(seed)
    model = MultiTaskBertModel(MultiTaskBertConfig(**TINY)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def sst_logits(model) -> torch.Tensor:
    ids, mask = random_batch(batch=3, length=8, vocab=TINY["vocab_size"], seed=1)
    with torch.no_grad():
        return model(task="sst", input_ids=ids, attention_mask=mask).logits


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def checkpoint(tmp_path, minilm_tokenizer):
    folder = tmp_path / "ckpt"
    model = save_checkpoint(folder, minilm_tokenizer, seed=0)
    return folder, model


def test_push_then_download_byte_for_byte(fake_hub, checkpoint, tmp_path):
    folder, _ = checkpoint
    expected = local_files(folder)
    assert {"config.json", "model.safetensors", "modeling_mtbert.py", "tokenizer.json"} <= set(expected)
    # Training by-products next to the checkpoint must stay local.
    for junk in ("checkpoint-10/model.safetensors", "runs/Nov29/events.out", "optimizer.pt", "scheduler.pt",
                 "rng_state.pth"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_bytes(b"junk")

    commit = push_checkpoint(folder, REPO, private=True, commit_message="first upload")

    assert commit.startswith(f"{fake_hub.endpoint}/{REPO}/commit/") and commit.endswith(commit.oid)
    api = HfApi(endpoint=fake_hub.endpoint)
    assert api.model_info(REPO).sha == commit.oid
    assert api.model_info(REPO).private is True
    assert sorted(api.list_repo_files(REPO)) == sorted(expected)
    assert Path(hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "c1")).read_bytes() == expected["config.json"]
    snapshot = Path(snapshot_download(REPO, cache_dir=tmp_path / "c2"))
    assert snapshot.name == commit.oid
    assert local_files(snapshot) == expected
    # Pushing the same folder again changes nothing: same head commit.
    assert push_checkpoint(folder, REPO).oid == commit.oid
    assert fake_hub.unhandled == []


LOAD_BY_REPO_ID = textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoModel, AutoTokenizer
    repo_id, inputs_file, out_file, *revisions = sys.argv[1:]
    ids, mask = torch.load(inputs_file)
    out = {}
    for revision in revisions:
        model = AutoModel.from_pretrained(repo_id, revision=revision, trust_remote_code=True).eval()
        AutoTokenizer.from_pretrained(repo_id, revision=revision)
        with torch.no_grad():
            out[revision] = model(task="sst", input_ids=ids, attention_mask=mask).logits
        out[revision + ":module"] = type(model).__module__
    torch.save(out, out_file)
    """
)


def load_in_subprocess(tmp_path: Path, *revisions: str) -> dict:
    """AutoModel.from_pretrained(REPO, trust_remote_code=True) in a fresh process that only knows HF_ENDPOINT."""
    torch.save(random_batch(batch=3, length=8, vocab=TINY["vocab_size"], seed=1), tmp_path / "inputs.pt")
    (tmp_path / "load.py").write_text(LOAD_BY_REPO_ID)
    result = subprocess.run(
        [sys.executable, "load.py", REPO, "inputs.pt", "out.pt", *revisions],
        capture_output=True, text=True, env=dict(os.environ), cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


def test_auto_model_loads_pushed_checkpoint_by_repo_id(fake_hub, checkpoint, tmp_path):
    folder, model = checkpoint
    push_checkpoint(folder, REPO)
    got = load_in_subprocess(tmp_path, "main")
    assert got["main:module"].startswith("transformers_modules.")  # the checkpoint's own code, fetched from the Hub
    torch.testing.assert_close(got["main"], sst_logits(model), atol=1e-6, rtol=0)
    assert fake_hub.unhandled == []


def test_branch_revision_keeps_its_own_weights(fake_hub, checkpoint, tmp_path, minilm_tokenizer):
    folder, model_main = checkpoint
    main_commit = push_checkpoint(folder, REPO)
    model_v2 = save_checkpoint(tmp_path / "ckpt_v2", minilm_tokenizer, seed=1)
    v2_commit = push_checkpoint(tmp_path / "ckpt_v2", REPO, revision="v2", commit_message="v2 weights")
    assert v2_commit.oid != main_commit.oid
    assert not torch.allclose(sst_logits(model_main), sst_logits(model_v2))

    api = HfApi(endpoint=fake_hub.endpoint)
    assert api.model_info(REPO).sha == main_commit.oid  # main untouched by the branch push
    assert api.model_info(REPO, revision="v2").sha == v2_commit.oid
    for revision, expected in (("main", model_main), ("v2", model_v2), (v2_commit.oid, model_v2)):
        loaded = MultiTaskBertModel.from_pretrained(REPO, revision=revision).eval()
        torch.testing.assert_close(sst_logits(loaded), sst_logits(expected), atol=1e-6, rtol=0, msg=revision)
    # And through AutoModel + remote code in a fresh process, one revision after the other.
    got = load_in_subprocess(tmp_path, "v2", "main")
    torch.testing.assert_close(got["v2"], sst_logits(model_v2), atol=1e-6, rtol=0)
    torch.testing.assert_close(got["main"], sst_logits(model_main), atol=1e-6, rtol=0)


def test_offline_push_fails_fast(fake_hub, checkpoint, monkeypatch):
    folder, _ = checkpoint
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="Cannot push .* HF_HUB_OFFLINE is set"):
        push_checkpoint(folder, REPO)
    assert fake_hub.requests == []


def test_folder_without_config_is_refused(fake_hub, checkpoint):
    folder, _ = checkpoint
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="missing config.json"):
        push_checkpoint(folder, REPO)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ValueError, match=r"missing config.json and a \*.safetensors weights file"):
        push_checkpoint(folder, REPO)
    assert fake_hub.requests == []


PIPELINES_BY_REPO_ID = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_mtbert"] = None  # a user without our package
    from transformers import AutoModel, pipeline
    repo_id, out_file, revisions = sys.argv[1], sys.argv[2], sys.argv[3:]
    out = {}
    for revision in revisions:
        kw = dict(model=repo_id, revision=revision, trust_remote_code=True)
        out[revision] = {
            "sentiment": pipeline("sentiment-mt", **kw)(["What a lovely film.", "Dull."], top_k=2),
            "paraphrase": pipeline("paraphrase-mt", **kw)({"text": "How do I learn Python?",
                                                           "text_pair": "What is the best way to learn Python?"}),
            "similarity": pipeline("similarity-mt", **kw)(("A man plays a guitar.", "A person plays music.")),
            "module": type(pipeline("similarity-mt", **kw)).__module__,
        }
    json.dump(out, open(out_file, "w"))
    """
)


def _local_pipeline_outputs(folder: Path) -> dict:
    from transformers import pipeline

    return {
        "sentiment": pipeline("sentiment-mt", model=str(folder))(["What a lovely film.", "Dull."], top_k=2),
        "paraphrase": pipeline("paraphrase-mt", model=str(folder))(
            {"text": "How do I learn Python?", "text_pair": "What is the best way to learn Python?"}),
        "similarity": pipeline("similarity-mt", model=str(folder))(("A man plays a guitar.", "A person plays music.")),
    }


def test_cli_push_then_every_pipeline_from_the_repo_without_the_package(fake_hub, tmp_path, minilm_tokenizer):
    """The issue's end-to-end path: `hf-mtbert push` a trained-looking folder, push a second revision, then load
    AutoModel and each pipeline by repo id and revision in a process that cannot import hf_mtbert."""
    import json

    from hf_mtbert.cli import main

    folders = {}
    for revision, seed in (("main", 0), ("v2", 1)):
        torch.manual_seed(seed)
        config = MultiTaskBertConfig(**{**TINY, "vocab_size": minilm_tokenizer.vocab_size})
        folder = tmp_path / f"ckpt-{revision}"
        MultiTaskBertModel(config).save_pretrained(folder)
        minilm_tokenizer.save_pretrained(folder)
        (folder / "eval_results.json").write_text(json.dumps({"eval_sst_accuracy": 0.25 + seed / 10}))
        (folder / "training_args.json").write_text(json.dumps({"learning_rate": 1e-4, "base_model": "some/bert"}))
        (folder / "pipeline_mtbert.py").unlink()  # as an older checkpoint would be: push adds the code
        main(["push", "--folder", str(folder), "--repo-id", REPO] + (["--revision", revision] if seed else []))
        folders[revision] = folder
    files = set(HfApi(endpoint=fake_hub.endpoint).list_repo_files(REPO, revision="v2"))
    assert {"README.md", "pipeline_mtbert.py", "modeling_mtbert.py", "training_args.json", "eval_results.json",
            "tokenizer.json", "model.safetensors"} <= files
    card = Path(hf_hub_download(REPO, "README.md", revision="v2", cache_dir=tmp_path / "c")).read_text()
    assert "| sst | accuracy | 0.3500 |" in card and f'pipeline("sentiment-mt", model="{REPO}"' in card

    (tmp_path / "pipes.py").write_text(PIPELINES_BY_REPO_ID)
    result = subprocess.run([sys.executable, "pipes.py", REPO, "out.json", "main", "v2"], capture_output=True,
                            text=True, env=dict(os.environ), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    for revision, folder in folders.items():
        assert got[revision].pop("module").startswith("transformers_modules.")
        assert rounded(got[revision]) == rounded(_local_pipeline_outputs(folder)), revision
    assert rounded(got["main"]) != rounded(got["v2"])  # each revision its own weights
    assert fake_hub.unhandled == []


def _dead_endpoint(monkeypatch) -> str:
    """Point the Hub at a local port nothing listens on: the network is down, HF_HUB_OFFLINE is not set."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return endpoint


def test_unreachable_hub_fails_fast_or_uses_the_cache(fake_hub, checkpoint, monkeypatch, caplog):
    """No network and no HF_HUB_OFFLINE: a repo id that is not cached fails at once with our message (before
    huggingface_hub's ~25 s of retries per file), and one that is cached loads from the cache."""
    folder, model = checkpoint
    push_checkpoint(folder, REPO)
    from hf_mtbert.checkpoint import load_tokenizer

    online = MultiTaskBertModel.from_pretrained(REPO).eval()  # fills the cache
    vocab = load_tokenizer(REPO).get_vocab()
    endpoint = _dead_endpoint(monkeypatch)
    assert load_tokenizer(REPO).get_vocab() == vocab
    with pytest.raises(OSError, match="the Hub cannot be reached"):
        load_tokenizer("test-user/never-pushed")
    with pytest.raises(OSError, match=r"'test-user/never-pushed' is not a local folder, the Hub cannot be reached "
                                      rf"\({endpoint}: .+\), and it is not in the local cache"):
        MultiTaskBertModel.from_pretrained("test-user/never-pushed")
    with pytest.raises(OSError, match="the Hub cannot be reached"):  # the CLI loads the config first
        MultiTaskBertConfig.from_pretrained("test-user/never-pushed")
    from transformers.utils import logging as hf_logging

    from hf_mtbert.training.run import ModelDataArguments, load_model

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            cached = MultiTaskBertModel.from_pretrained(REPO).eval()
            assert "loading 'test-user/tiny-mtbert' from the local cache" in caplog.text
            caplog.clear()
            loaded, _ = load_model(ModelDataArguments(model_name_or_path=REPO))  # config, model and tokenizer
            assert caplog.text.count("from the local cache") == 1
    finally:
        hf_logging.disable_propagation()
    torch.testing.assert_close(sst_logits(cached), sst_logits(online), rtol=0, atol=0)
    torch.testing.assert_close(sst_logits(loaded.eval()), sst_logits(online), rtol=0, atol=0)
