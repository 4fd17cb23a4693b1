import json

import pytest

from hf_mtbert import MultiTaskBertConfig
from hf_mtbert.cli import main


def test_init_then_predict(minilm_path, tmp_path, capsys):
    out = tmp_path / "ckpt"
    main(["init", "--base", minilm_path, "--output", str(out)])
    assert (out / "modeling_mtbert.py").exists()
    capsys.readouterr()
    main(["predict", str(out), "--task", "sts", "--text", "A man plays a guitar.", "A dog runs.",
          "--text-b", "A person plays an instrument.", "A dog runs."])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["A man plays a guitar.", "A dog runs."]
    assert rows[1]["score"] == pytest.approx(5.0, abs=1e-3)  # identical sentences: cosine 1, scaled to 5
    assert 0.0 <= rows[0]["score"] < 5.0
    main(["predict", str(out), "--task", "sst", "--text", "Great film."])
    row = json.loads(capsys.readouterr().out)
    assert row["label"] in {"very negative", "negative", "neutral", "positive", "very positive"}


def test_init_refuses_to_overwrite(minilm_path, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("work")
    with pytest.raises(SystemExit) as exc:
        main(["init", "--base", minilm_path, "--output", str(tmp_path)])
    assert exc.value.code == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "work"


def test_predict_pair_task_needs_second_texts(minilm_path, tmp_path, capsys):
    main(["init", "--base", minilm_path, "--output", str(tmp_path / "c")])
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "c"), "--task", "quora", "--text", "only one side"])
    assert "takes sentence pairs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(minilm_path, tmp_path_factory):
    """A two-step `hf-mtbert train` run from a YAML file, on a few real rows of SST and STS."""
    out = tmp_path_factory.mktemp("train")
    config = out / "run.yaml"
    config.write_text(
        f"model_name_or_path: {minilm_path}\n"
        f"output_dir: {out / 'model'}\n"
        "tasks: sst,sts\n"
        "max_train_samples: 32\n"
        "max_eval_samples: 24\n"
        "max_steps: 2\n"
        "per_device_train_batch_size: 8\n"
        "report_to: none\n"
        "save_strategy: 'no'\n"
        "eval_strategy: 'no'\n"
        "disable_tqdm: true\n"
        "task_specs:\n"  # a list in YAML (a JSON string on the command line): SST's head on the token mean
        "  - {name: sst, num_labels: 5, pooling: mean}\n"
    )
    main(["train", str(config)])
    return out / "model"


def test_train_from_yaml_saves_a_loadable_model_and_dev_metrics(trained, capsys):
    from transformers import AutoModel

    results = json.loads((trained / "eval_results.json").read_text())
    for key in ("eval_sst_accuracy", "eval_sts_pearson", "train_seconds", "machine"):
        assert key in results, key
    assert results["train_steps"] == 2
    model = AutoModel.from_pretrained(str(trained))
    assert model.config.task_names == ["sst", "sts"]
    assert model.config.get_task("sst").pooling == "mean" and model.config.get_task("sts").pooling == "mean"
    assert model.config.get_task("sst").kind == "classification"


def test_task_specs_forms():
    from hf_mtbert.training.run import ModelDataArguments, task_spec_dicts

    config = MultiTaskBertConfig()
    as_json = ModelDataArguments(tasks="sst,sts", task_specs='[{"name": "sts", "pair_encoding": "cross", '
                                 '"kind": "regression", "input": "pair", "label_range": [0, 5]}]')
    specs = task_spec_dicts(as_json, config)
    assert specs[0] == config.tasks[0] and specs[1]["pair_encoding"] == "cross"
    for bad, message in (("[{oops", "not valid JSON"), ('{"name": "sst"}', "must be a list"),
                         ([{"pooling": "mean"}], "each with a 'name'")):
        with pytest.raises(ValueError, match=message):
            task_spec_dicts(ModelDataArguments(tasks="sst", task_specs=bad), config)


def test_evaluate_a_checkpoint(trained, capsys):
    capsys.readouterr()
    main(["evaluate", "--model_name_or_path", str(trained), "--max_eval_samples", "24",
          "--disable_tqdm", "true"])
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((trained / "eval_results.json").read_text())
    assert metrics["eval_sst_accuracy"] == pytest.approx(saved["eval_sst_accuracy"])
    assert metrics["eval_sts_pearson"] == pytest.approx(saved["eval_sts_pearson"], abs=1e-6)


def test_predict_writes_cs224n_files(trained, tmp_path, capsys):
    from hf_mtbert.data import load_cs224n

    main(["predict", str(trained), "--cs224n", "--splits", "test", "--output-dir", str(tmp_path)])
    lines = (tmp_path / "sst-test-output.csv").read_text().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment "
    ids = load_cs224n("sst", "test")["id"]
    assert len(lines) == len(ids) + 1
    row_id, value = lines[1].split(" , ")
    assert row_id == ids[0] and int(value) in range(5)
    sts = (tmp_path / "sts-test-output.csv").read_text().splitlines()
    assert sts[0] == "id \t Predicted_Similiarity " and 0.0 <= float(sts[1].split(" , ")[1]) <= 5.0


def test_train_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--sampling_strategy", "random", "--max_steps", "1"])
    assert "sampling_strategy" in capsys.readouterr().err


def test_train_help_lists_smart_and_surgery(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--smart", "--smart_bregman_weight", "--grad_surgery", "--grad-surgery", "--cagrad_c"):
        assert option in text, option


def test_train_with_smart_and_pcgrad_from_the_command_line(minilm_path, tmp_path):
    out = tmp_path / "model"
    main(["train", "--model_name_or_path", minilm_path, "--output_dir", str(out), "--tasks", "sst,sts",
          "--max_train_samples", "16", "--max_eval_samples", "8", "--max_steps", "2",
          "--per_device_train_batch_size", "4", "--sampling-strategy", "concurrent", "--grad-surgery", "pcgrad",
          "--smart", "--smart-weights", "sst=5,sts=3", "--report_to", "none", "--save_strategy", "no",
          "--eval_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "1"])
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [log for log in state["log_history"] if "smart_sst" in log]
    assert len(logs) == 2
    assert all(log["smart_sts"] >= 0 and log["surgery_weight_sts"] >= 1.0 for log in logs)


def test_train_with_lora_then_evaluate_and_card(minilm_path, tmp_path, capsys):
    out = tmp_path / "lora"
    main(["train", "--model_name_or_path", minilm_path, "--output_dir", str(out), "--tasks", "sst,sts",
          "--max_train_samples", "16", "--max_eval_samples", "8", "--max_steps", "2", "--lora", "--lora_r", "4",
          "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
          "--disable_tqdm", "true", "--bf16", "false"])
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "README.md",
            "training_args.json", "eval_results.json"} <= files
    assert "model.safetensors" not in files
    saved = json.loads((out / "eval_results.json").read_text())
    capsys.readouterr()
    main(["evaluate", "--model_name_or_path", str(out), "--max_eval_samples", "8", "--disable_tqdm", "true",
          "--bf16", "false"])
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["eval_sst_accuracy"] == pytest.approx(saved["eval_sst_accuracy"])
    assert metrics["eval_sts_pearson"] == pytest.approx(saved["eval_sts_pearson"], abs=1e-5)  # merged weights
    card = (out / "README.md").read_text()
    assert f"{saved['eval_sst_accuracy']:.4f}" in card and json.loads((out / "training_args.json").read_text())[
        "data"]["lora"] is True


def test_hyperparameter_search_with_optuna(minilm_path, tmp_path):
    from hf_mtbert.training import MultiTaskTrainingArguments
    from hf_mtbert.training.run import ModelDataArguments, hyperparameter_search

    data_args = ModelDataArguments(model_name_or_path=minilm_path, tasks="sst,sts", max_train_samples=16,
                                   max_eval_samples=16)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "hp"), max_steps=2, per_device_train_batch_size=4,
                                      report_to=[], save_strategy="no", disable_tqdm=True, bf16="false", seed=0)
    record = hyperparameter_search(data_args, args, n_trials=2)
    saved = json.loads((tmp_path / "hp" / "hp_search.json").read_text())
    assert saved == record and len(record["trials"]) == 2
    assert record["settings"] == f"2 trials of 2 steps, B=4, 16 dev rows per task scored, base {minilm_path}"
    assert all(t["state"] == "COMPLETE" and -1.0 <= t["objective"] <= 1.0 for t in record["trials"])
    assert record["best"]["objective"] == max(t["objective"] for t in record["trials"])
    assert record["trials"][0]["params"]["learning_rate"] != record["trials"][1]["params"]["learning_rate"]
    assert {"learning_rate", "weight_decay", "sampling_strategy", "label_smoothing"} == set(
        record["best"]["hyperparameters"])
