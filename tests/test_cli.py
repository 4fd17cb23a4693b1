import json

import pytest

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
