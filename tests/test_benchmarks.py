"""The benchmarks run end to end (tiny random BERT, real CS224N rows, one round) and print their tables.

They are not timed tests: speed is judged from their output on real weights (README). These runs only keep the
scripts from rotting: bench_train once failed on a config change that no test exercised.
"""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in output.splitlines()
            if line.startswith("| ") and not line.startswith("| pass") and not line.startswith("| run")
            and not line.startswith("| step")]


def test_bench_encoder(tiny_bert):
    out = run("bench_encoder.py", "--model", tiny_bert, "--batch", "2", "--length", "16", "--repeats", "1")
    rows = table_rows(out)
    assert ["forward", "fp32"] == rows[0][:2] and rows[0][2].startswith("full (32 real tokens)")
    assert len(rows) in (4, 8)  # the bf16 rows only where the CPU does bf16 in hardware
    assert all(float(r[5].rstrip("x")) > 0 for r in rows)
    assert "Kernel floor, fp32 forward on full rows" in out and "CPU: " in out


def test_bench_train(tiny_bert):
    out = run("bench_train.py", "--model", tiny_bert, "--batch", "4", "--steps", "3", "--warmup", "1",
              "--rounds", "1")
    rows = {r[0]: r for r in table_rows(out)}
    assert len(rows) == 4 and rows["transformers Trainer + BertForSequenceClassification"][2] == "1.00x"
    assert all(float(r[1]) > 0 for r in rows.values())


def test_bench_mtl(tiny_bert):
    out = run("bench_mtl.py", "--model", tiny_bert, "--batch", "4", "--steps", "3", "--warmup", "1",
              "--rounds", "1")
    rows = {r[0]: r for r in table_rows(out)}
    assert set(rows) == {"plain (summed loss)", "pcgrad", "cagrad", "gradvac", "smart K=1"}
    assert rows["plain (summed loss)"][2] == "1.00x"
    assert "surgery alone" in out and "bert-base" in out
