"""Per-task ensembles: averaged logits, greedy member choice on dev, and `hf-mtbert evaluate a,b`."""

import json

import numpy as np
import pytest

from hf_mtbert.ensemble import average, ensemble, greedy_members
from hf_mtbert.metrics import task_metrics


def test_average_is_the_mean_and_checks_shapes():
    a, b = np.array([[1.0, 3.0]]), np.array([[3.0, -1.0]])
    np.testing.assert_allclose(average([a, b]), [[2.0, 1.0]])
    with pytest.raises(ValueError, match="one shape"):
        average([a, np.zeros((2, 2))])


def test_greedy_members_start_from_the_best_single_and_add_only_what_helps():
    labels = np.array([0, 1, 0, 1])
    good = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [1.0, 0.0]])  # 3 of 4 right
    fixer = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 5.0]])  # 3 of 4 right, wrong elsewhere
    bad = -good  # all wrong where good is right
    members, metrics = greedy_members([bad, good, fixer], labels, "classification", 2)
    assert members == [1, 2] and metrics["accuracy"] == 1.0  # good + fixer average to all four right
    assert task_metrics("classification", good, labels, 2)["accuracy"] == 0.75
    members, _ = greedy_members([bad, good], labels, "classification", 2)
    assert members == [1]  # adding the bad one never helps


def test_ensemble_of_regressions_and_the_overall_score():
    class Spec:
        def __init__(self, kind, num_labels):
            self.kind, self.num_labels = kind, num_labels

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 50)
    noisy = [gold[:, None] + rng.normal(0, 1.5, (50, 1)) for _ in range(3)]
    labels = {"sts": gold, "sst": np.array([0, 1, 2, 3, 4]), "quora": np.array([0, 1, 1, 0, 1])}
    sst = np.eye(5) * 3
    quora = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    per_checkpoint = [{"sts": n, "sst": sst, "quora": quora} for n in noisy]
    specs = {"sts": Spec("regression", 1), "sst": Spec("classification", 5), "quora": Spec("classification", 2)}
    result = ensemble(per_checkpoint, labels, specs)
    sts = result["tasks"]["sts"]
    assert sts["metrics"]["pearson"] >= max(s["pearson"] for s in sts["single"])
    assert len(sts["members"]) >= 2  # averaging independent noise helps
    assert result["combined"]["overall"] == pytest.approx(
        (1.0 + 0.8 + (sts["metrics"]["pearson"] + 1) / 2) / 3)


def test_evaluate_several_checkpoints_from_the_command_line(minilm_path, tmp_path, capsys):
    from hf_mtbert.cli import main

    folders = []
    for seed in (0, 1):
        out = tmp_path / f"m{seed}"
        main(["train", "--model_name_or_path", minilm_path, "--output_dir", str(out), "--tasks", "sst,sts",
              "--max_train_samples", "16", "--max_eval_samples", "24", "--max_steps", "2", "--seed", str(seed),
              "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
              "--disable_tqdm", "true", "--bf16", "false"])
        folders.append(str(out))
    capsys.readouterr()
    main(["evaluate", "--model_name_or_path", ",".join(folders), "--max_eval_samples", "24",
          "--output_dir", str(tmp_path / "ens"), "--disable_tqdm", "true", "--bf16", "false"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "ens" / "ensemble_results.json").read_text())
    assert result == saved and saved["checkpoints"] == folders
    for task, key in (("sst", "accuracy"), ("sts", "pearson")):
        info = saved["tasks"][task]
        singles = [json.loads((tmp_path / f"m{i}" / "eval_results.json").read_text())[f"eval_{task}_{key}"]
                   for i in (0, 1)]
        for single, own in zip(info["single"], singles, strict=True):  # each member scored as its own run did
            assert single[key] == pytest.approx(own, abs=1e-5)
        assert info["metrics"][key] >= max(singles) - 1e-9 and info["members"]
