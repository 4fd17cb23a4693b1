"""The README's commands and code blocks are the ones that work."""

import os
import re
import subprocess
import sys
from pathlib import Path

from hf_mtbert.data import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_two_commands_and_ci_runs_the_test_command():
    install, test_command = (b.strip() for b in blocks("bash")[:2])
    assert install.index("pip install torch==2.13.0") < install.index('pip install -e ".[dev]"')
    assert install.endswith("hf-mtbert train")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci, "the README's test command must be what .ci/run runs"
    assert ci.index("pip install torch==2.13.0") < ci.index('pip install -e ".[dev]"')


def test_python_examples_run(tmp_path):
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(blocks("python")))
    # The examples run in a scratch folder, so a relative data path (as CI sets it) must be made absolute.
    env = {**os.environ, "HF_MTBERT_DATA_DIR": str(resolve_data_dir().resolve())}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[{'score':" in result.stdout
    assert "torch.Size([1, 5])" in result.stdout
    assert "['sst', 'nli', 'sts']" in result.stdout
    assert "'eval_sst_accuracy'" in result.stdout  # the training example trained and evaluated
    assert "'alignment':" in result.stdout and "'uniformity':" in result.stdout
    assert "'paraphrase_probability':" in result.stdout  # the pipelines example
