"""The experiment scripts: every technique is a valid configuration, a comparison runs end to end (a few real rows,
seconds of budget) and resumes, and render_results turns what it wrote into tables, plots and the README block."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import compare_techniques  # noqa: E402
import render_results  # noqa: E402

from hf_mtbert import MultiTaskBertConfig  # noqa: E402
from hf_mtbert.data.loading import cs224n_task_spec  # noqa: E402
from hf_mtbert.training import MultiTaskTrainingArguments  # noqa: E402


@pytest.mark.parametrize("name", list(compare_techniques.TECHNIQUES))
def test_every_technique_is_a_valid_configuration(name, tmp_path):
    options = compare_techniques.TECHNIQUES[name]
    training = {k: v for k, v in options.items() if k not in {*compare_techniques.DATA_KEYS, "lora"}}
    # the base settings of compare_techniques.make_trainer, then the technique's overrides
    MultiTaskTrainingArguments(**{"output_dir": str(tmp_path), "use_cpu": True, "report_to": [],
                                  "sampling_strategy": "concurrent", **training})
    custom = {spec["name"]: spec for spec in options.get("task_specs", [])}
    tasks = [custom.get(t, cs224n_task_spec(t).to_dict()) for t in ("sst", "quora", "sts")]
    config = MultiTaskBertConfig(tasks=tasks)
    for task in options.get("train_tasks", []):
        assert task in config.task_names


def _run(name, options, dev, curve):
    return {"options": options, "machine": "test CPU", "seconds_per_step": 0.5, "steps": 10, "planned_steps": 10,
            "stopped_at_time_limit": False, "train_minutes": 1.0, "dev": dev, "curve": curve, "log_history": []}


def _results(runs):
    return {"machine": "test CPU", "torch": "x", "model": "minilm", "budget_minutes": 1.0, "batch_per_task": 32,
            "learning_rate": 1e-4, "smart_weights": "", "bf16": "false", "curve_rows": 10, "calibration_steps": 1,
            "runs": runs}


def test_render_table_header_and_readme_block(tmp_path):
    full = {"eval_sst_accuracy": 0.41234, "eval_quora_accuracy": 0.8, "eval_sts_pearson": 0.85, "eval_overall": 0.7}
    runs = {"none": _run("none", {}, full, [{"step": 5, "minutes": 0.5, **full}]),
            "sst_only": _run("sst_only", {"train_tasks": ["sst"]}, {"eval_sst_accuracy": 0.45},
                             [{"step": 5, "minutes": 0.5, "eval_sst_accuracy": 0.3}])}
    results = _results(runs)
    table = render_results.render_table(results).splitlines()
    assert table[2] == "| none | 10 | 0.50 | 1.0 | 0.412 | 0.800 | 0.850 | 0.700 |"
    assert table[3] == "| sst_only | 10 | 0.50 | 1.0 | 0.450 | – | – | – |"
    head = render_results.header(results)
    assert 'sst_only: `{"train_tasks": ["sst"]}`' in head and "none:" not in head and "test CPU" in head

    group = tmp_path / "results" / "sampling"
    group.mkdir(parents=True)
    (group / "compare_techniques.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{render_results.BEGIN}\nold text\n{render_results.END}\nrest\n")
    subprocess.run([sys.executable, str(SCRIPTS / "render_results.py"), "--results", str(tmp_path / "results"),
                    "--readme", str(readme)], check=True, capture_output=True, cwd=tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{render_results.END}\nrest\n") and "old text" not in text
    assert "#### Task sampling regimes" in text and table[3] in text
    assert (group / "compare_techniques.png").stat().st_size > 1000
    assert (tmp_path / "results" / "summary.md").read_text() in text

    readme.write_text("no block\n")
    bad = subprocess.run([sys.executable, str(SCRIPTS / "render_results.py"), "--results",
                          str(tmp_path / "results"), "--readme", str(readme)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no <!-- results:begin -->" in bad.stderr
    assert readme.read_text() == "no block\n"


def test_best_section_plots_from_dev_predictions(tmp_path):
    """The confusion matrix and the scatter come from the prediction files joined with the gold dev labels."""
    from hf_mtbert.data import load_cs224n

    best = tmp_path / "best"
    (best / "predictions").mkdir(parents=True)
    sst = load_cs224n("sst", "dev")
    sts = load_cs224n("sts", "dev")
    # a fake model: right on every SST row but the first, and STS = gold (Pearson 1)
    labels = list(sst["label"])
    labels[0] = (labels[0] + 1) % 5
    (best / "predictions" / "sst-dev-output.csv").write_text(
        "id \t Predicted_Sentiment \n" + "".join(f"{i} , {y} \n" for i, y in zip(sst["id"], labels, strict=True)))
    (best / "predictions" / "sts-dev-output.csv").write_text(
        "id \t Predicted_Similarity \n" + "".join(f"{i} , {y} \n" for i, y in zip(sts["id"], sts["label"],
                                                                                   strict=True)))
    (best / "eval_results.json").write_text(json.dumps({"eval_sst_accuracy": 0.5, "machine": "m",
                                                        "train_seconds": 60, "train_steps": 3}))
    text = render_results.best_section(best, None)
    assert "| dev | 0.500 | – | – | – |" in text
    assert (best / "sst_confusion.png").stat().st_size > 1000 and (best / "sts_scatter.png").exists()
    assert "3 steps; `train()` took 1 min 00 s" in text


def test_compare_techniques_runs_and_resumes(tmp_path, minilm_path):
    """Three techniques (concurrent, a single task, a bi-encoder Quora head) on a few real rows; then --resume
    adds a fourth and keeps the first three as they were."""
    out = tmp_path / "cmp"
    base = [sys.executable, str(SCRIPTS / "compare_techniques.py"), "--model", minilm_path, "--budget-minutes",
            "0.03", "--calibration-steps", "1", "--batch", "4", "--max-train-samples", "16", "--max-eval-samples",
            "12", "--curve-rows", "8", "--curve-points", "1", "--results", str(out)]
    subprocess.run(base + ["--techniques", "none,sst_only,quora_bi"], check=True, capture_output=True)
    results = json.loads((out / "compare_techniques.json").read_text())
    assert list(results["runs"]) == ["none", "sst_only", "quora_bi"]
    assert "eval_sst_accuracy" in results["runs"]["sst_only"]["dev"]
    assert not [k for k in results["runs"]["sst_only"]["dev"] if "quora" in k or "sts" in k]
    assert "eval_overall" in results["runs"]["none"]["dev"]
    one = json.loads((out / "quora_bi.json").read_text())
    assert one["name"] == "quora_bi" and one["budget_minutes"] == 0.03
    assert one["dev"] == results["runs"]["quora_bi"]["dev"]
    assert one["options"]["task_specs"][0]["pair_encoding"] == "bi"

    subprocess.run(base + ["--techniques", "none,round_robin", "--resume"], check=True, capture_output=True)
    again = json.loads((out / "compare_techniques.json").read_text())
    assert list(again["runs"]) == ["none", "sst_only", "quora_bi", "round_robin"]
    assert again["runs"]["none"] == results["runs"]["none"]
    assert "| round_robin |" in (out / "compare_techniques.md").read_text()

    changed = subprocess.run(base[:5] + ["0.05"] + base[6:] + ["--techniques", "none", "--resume"],
                             capture_output=True, text=True)
    assert changed.returncode == 2 and "other settings" in changed.stderr


def test_simcse_then_finetune_runs(tmp_path, tiny_bert):
    """The SimCSE-then-fine-tune comparison end to end at toy size: both runs, the embedding measures, the table."""
    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(f"sentence number {i} is about topic {i % 7}." for i in range(40)) + "\n")
    results = tmp_path / "results"
    subprocess.run([sys.executable, str(SCRIPTS / "simcse_then_finetune.py"), "--model", tiny_bert, "--text",
                    str(text), "--simcse-minutes", "0.01", "--finetune-minutes", "0.01", "--calibration-steps", "1",
                    "--simcse-batch", "8", "--batch", "4", "--max-train-samples", "16", "--max-eval-samples", "8",
                    "--output", str(tmp_path / "ckpt"), "--results", str(results)], check=True, capture_output=True)
    saved = json.loads((results / "simcse_then_finetune.json").read_text())
    assert set(saved["runs"]) == {"SimCSE, then fine-tune", "fine-tune alone"}
    assert saved["simcse"]["steps"] >= 1 and saved["settings"]["max_train_samples"] == 16
    for run in saved["runs"].values():
        assert {"eval_sst_accuracy", "eval_quora_accuracy", "eval_sts_pearson"} <= set(run["dev"])
        assert -1.0 <= run["embeddings"]["sts_spearman_cosine"] <= 1.0
    assert "| fine-tune alone |" in (results / "simcse_then_finetune.md").read_text()


def test_release_best_predicts_pushes_and_checks(tmp_path, minilm_tokenizer):
    """release_best.py --skip-train on a tiny trained-looking checkpoint: CS224N prediction files, a push to the
    local Hub stand-in, and the repo's AutoModel and pipelines (package blocked) answering as the folder does."""
    import torch

    from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel

    folder = tmp_path / "ckpt"
    torch.manual_seed(0)
    config = MultiTaskBertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=512)
    MultiTaskBertModel(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    (folder / "eval_results.json").write_text(json.dumps({"eval_sst_accuracy": 0.25, "eval_overall": 0.5}))
    (folder / "training_args.json").write_text(json.dumps({"learning_rate": 1e-4, "base_model": "some/bert"}))
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 3, "eval_overall": 0.5}],
                                                           "best_model_checkpoint": None}))
    run_config = tmp_path / "run.yaml"
    run_config.write_text(f"output_dir: {folder}\n")
    results, card = tmp_path / "results", tmp_path / "card.md"
    subprocess.run([sys.executable, str(SCRIPTS / "release_best.py"), "--config", str(run_config), "--skip-train",
                    "--repo-id", "someone/tiny", "--results", str(results), "--card", str(card)],
                   check=True, capture_output=True)
    release = json.loads((results / "release.json").read_text())
    assert release["hub_matches_local"] is True
    assert release["hub_model_class"].startswith("transformers_modules.")
    assert release["dev_evaluations"] == [{"step": 3, "eval_overall": 0.5}]
    assert set(release["hub_outputs"]) == {"sst_logits", "sentiment-mt", "paraphrase-mt", "similarity-mt"}
    assert "someone/tiny" in card.read_text()
    predicted = {p.name for p in (results / "predictions").iterdir()}
    assert {"sst-test-output.csv", "sts-test-output.csv", "para-dev-output.csv"} <= predicted
    from hf_mtbert.data import load_cs224n

    lines = (results / "predictions" / "sst-test-output.csv").read_text().splitlines()
    assert len(lines) == 1 + len(load_cs224n("sst", "test"))


def test_ensemble_table():
    single = [{"accuracy": 0.5}, {"accuracy": 0.4}]
    record = {"checkpoints": ["a", "b"], "note": "members were chosen on these dev sets",
              "tasks": {"sst": {"members": [0], "metrics": {"accuracy": 0.5}, "single": single},
                        "sts": {"members": [0, 1], "metrics": {"pearson": 0.9},
                                "single": [{"pearson": 0.8}, {"pearson": 0.85}]}}}
    lines = render_results.ensemble_table(record).splitlines()
    assert lines[0].startswith("Checkpoints: 0 = `a`, 1 = `b`. Members were chosen")
    assert lines[4] == "| sst | accuracy | 0.500 | 0.400 | 0 | 0.500 |"
    assert lines[5] == "| sts | pearson | 0.800 | 0.850 | 0, 1 | 0.900 |"
