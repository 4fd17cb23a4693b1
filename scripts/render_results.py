"""Render every experiment under results/ into Markdown tables and PNG plots, and (with --readme) into the README.

Reads what the other scripts wrote and nothing else:

    results/<group>/compare_techniques.json   compare_techniques.py runs (one table and one dev-curve PNG per group)
    results/simcse_then_finetune.json         simcse_then_finetune.py
    results/hp_search/hp_search.json          hp_search.py
    results/best/                             the released checkpoint's eval_results.json and its dev/test
                                              predictions (`hf-mtbert predict --cs224n`): SST confusion matrix and
                                              STS predicted-vs-gold scatter

Writes `results/summary.md` (every table, with links to the PNGs) and, per group, `compare_techniques.{md,png}`. With
`--readme README.md` it replaces the part of the README between `<!-- results:begin -->` and `<!-- results:end -->`
by the summary, so the README shows exactly what the runs wrote.

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python scripts/render_results.py --readme README.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

METRICS = {"sst": "eval_sst_accuracy", "quora": "eval_quora_accuracy", "sts": "eval_sts_pearson"}
# Titles of the comparison groups, in the order the summary shows them; other folders follow by name.
GROUPS = {
    "single_task": "Single-task baselines against multi-task training",
    "sampling": "Task sampling regimes",
    "sampling_shuffled": "Task sampling regimes again, after the bucketing-order fix (runs use their full budget)",
    "weighting": "Task loss weighting",
    ".": "SMART and PCGrad",
    "surgery": "Gradient surgery: PCGrad, CAGrad, GradVac",
    "pairs": "Cross- against bi-encoder pairs",
    "lora_vs_full": "LoRA against full fine-tuning",
    "pooling": "SST's head on BERT's pooler ([CLS]) against the mean of the token states (seed 0)",
    "pooling/seed1": "The same two runs, seed 1",
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def render_table(results: dict) -> str:
    """One row per run: steps, speed, training minutes and the full-dev metrics ("–": task not trained)."""
    lines = ["| technique | steps | s/step | train min | SST acc | Quora acc | STS Pearson | overall |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in results["runs"].items():
        dev = run["dev"]
        cells = [_fmt(dev.get(key)) for key in (*METRICS.values(), "eval_overall")]
        lines.append(f"| {name} | {run['steps']} | {run['seconds_per_step']:.2f} | {run['train_minutes']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(results: dict) -> str:
    """What every run of a comparison shares, and what each changed."""
    machines = sorted({run.get("machine", results["machine"]) for run in results["runs"].values()})
    text = (f"Full dev sets after {results['budget_minutes']:g} training minutes per technique; {results['model']}, "
            f"B={results['batch_per_task']} per task, lr {results['learning_rate']:g}, fp32 unless bf16 is said "
            f"(bf16={results['bf16']}); machine: {'; '.join(machines)}.")
    changes = [f"{name}: `{json.dumps(run['options'])}`" for name, run in results["runs"].items() if run["options"]]
    if changes:
        text += " What each run changed: " + "; ".join(changes) + "."
    return text


def plot_curves(results: dict, path: Path) -> None:
    """Dev SST accuracy, Quora accuracy and STS Pearson against training minutes, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (task, key) in zip(axes, METRICS.items(), strict=True):
        for name, run in results["runs"].items():
            points = [p for p in run["curve"] if key in p]
            if not points:
                continue  # a single-task run of another task
            line, = ax.plot([p["minutes"] for p in points], [p[key] for p in points], marker="o", ms=3, label=name)
            if key in run["dev"]:
                ax.plot([run["train_minutes"]], [run["dev"][key]], marker="*", ms=12, color=line.get_color())
        ax.set_title(f"{task}: {key.removeprefix('eval_').replace('_', ' ')}")
        ax.set_xlabel("training minutes (evaluation excluded)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    machines = sorted({run.get("machine", results["machine"]) for run in results["runs"].values()})
    fig.suptitle(f"Dev subsets ({results['curve_rows']} rows per task) during training; ★ full dev at the end. "
                 + "; ".join(machines), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_group(results: dict, folder: Path) -> str:
    """A comparison's compare_techniques.md (header and table) and .png (dev curves); returns the table."""
    text = render_table(results)
    (folder / "compare_techniques.md").write_text(header(results) + "\n\n" + text + "\n")
    plot_curves(results, folder / "compare_techniques.png")
    return text


def _read_predictions(path: Path) -> dict[str, float]:
    """`{id: value}` from a CS224N `<task>-<split>-output.csv` (header line, then `id , value`)."""
    rows = {}
    with path.open(encoding="utf-8") as f:
        next(f)
        for line in f:
            row_id, value = (part.strip() for part in line.split(","))
            rows[row_id] = float(value)
    return rows


def plot_best(best: Path, data_dir: str | None) -> list[str]:
    """SST confusion matrix and STS scatter of the released checkpoint's dev predictions; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy.stats import pearsonr
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    from hf_mtbert.data import load_cs224n

    written = []
    sst_file = best / "predictions" / "sst-dev-output.csv"
    if sst_file.exists():
        pred = _read_predictions(sst_file)
        gold = load_cs224n("sst", "dev", data_dir)
        y_true = np.array(gold["label"])
        y_pred = np.array([int(pred[i]) for i in gold["id"]])
        names = ["very neg", "neg", "neutral", "pos", "very pos"]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ConfusionMatrixDisplay(confusion_matrix(y_true, y_pred, labels=range(5)), display_labels=names).plot(
            ax=ax, colorbar=False, xticks_rotation=30)
        ax.set_title(f"SST dev (n={len(y_true)}): accuracy {np.mean(y_true == y_pred):.3f}")
        fig.tight_layout()
        fig.savefig(best / "sst_confusion.png", dpi=110)
        plt.close(fig)
        written.append(str(best / "sst_confusion.png"))
    sts_file = best / "predictions" / "sts-dev-output.csv"
    if sts_file.exists():
        pred = _read_predictions(sts_file)
        gold = load_cs224n("sts", "dev", data_dir)
        y_true = np.array(gold["label"], dtype=float)
        y_pred = np.array([pred[i] for i in gold["id"]])
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(y_true, y_pred, s=6, alpha=0.4)
        ax.plot([0, 5], [0, 5], color="gray", lw=1)
        ax.set_xlabel("gold similarity")
        ax.set_ylabel("predicted similarity")
        ax.set_title(f"STS dev (n={len(y_true)}): Pearson {pearsonr(y_true, y_pred)[0]:.3f}")
        fig.tight_layout()
        fig.savefig(best / "sts_scatter.png", dpi=110)
        plt.close(fig)
        written.append(str(best / "sts_scatter.png"))
    return written


def hp_table(record: dict) -> str:
    """Every finished trial, best first."""
    trials = sorted((t for t in record["trials"] if t["objective"] is not None), key=lambda t: -t["objective"])
    names = sorted({k for t in trials for k in t["params"]})
    lines = [f"Objective: {record['objective']}; machine: {record['machine']}; "
             + (f"{record['settings']}; " if "settings" in record else "")
             + f"best: trial {record['best']['trial']}.", "",
             "| trial | objective | " + " | ".join(names) + " | seconds |",
             "|---" * (len(names) + 3) + "|"]
    for t in trials:
        values = [f"{t['params'][n]:.3g}" if isinstance(t["params"].get(n), float) else str(t["params"].get(n, "–"))
                  for n in names]
        lines.append(f"| {t['trial']} | {t['objective']:.4f} | " + " | ".join(values) + f" | {t['seconds']:.0f} |")
    return "\n".join(lines)


def ensemble_table(record: dict) -> str:
    """Per task: each checkpoint alone, the members chosen greedily on dev, and the ensemble."""
    primary = {"sst": "accuracy", "quora": "accuracy", "sts": "pearson"}
    names = record["checkpoints"]
    lines = [f"Checkpoints: {', '.join(f'{i} = `{n}`' for i, n in enumerate(names))}. {record['note'].capitalize()}.",
             "", "| task | metric | " + " | ".join(f"checkpoint {i}" for i in range(len(names)))
             + " | members | ensemble |", "|---" * (len(names) + 4) + "|"]
    for task, result in record["tasks"].items():
        metric = primary.get(task, next(iter(result["metrics"])))
        lines.append(f"| {task} | {metric} | " + " | ".join(_fmt(s[metric]) for s in result["single"])
                     + f" | {', '.join(map(str, result['members']))} | {_fmt(result['metrics'][metric])} |")
    return "\n".join(lines)


def with_reference(results: dict, reference: dict | None) -> dict:
    """A group without a `none` run borrows the sampling group's (same budget, batch and learning rate) as its
    first row, so each table shows the plain multi-task run it is measured against."""
    same = ("budget_minutes", "batch_per_task", "learning_rate", "model", "bf16", "calibration_steps")
    if "none" in results["runs"] or reference is None or "none" not in reference["runs"] or any(
            results[k] != reference[k] for k in same):
        return results
    return {**results, "runs": {"none (sampling run)": reference["runs"]["none"], **results["runs"]}}


def _minutes(value: float) -> str:
    return f"{int(value)} min {round(value % 1 * 60):02d} s"


def best_section(best: Path, data_dir: str | None) -> str:
    results = json.loads((best / "eval_results.json").read_text())
    release = json.loads((best / "release.json").read_text()) if (best / "release.json").exists() else {}
    lines = [f"Machine: {results.get('machine', '?')}. Training: {results.get('train_steps', '?')} steps; "
             f"`train()` took {_minutes(results.get('train_seconds', float('nan')) / 60)} (its dev evaluations "
             "included)"
             + (f", the whole `hf-mtbert train` command {_minutes(release['train_wall_minutes'])}"
                if "train_wall_minutes" in release else "") + ".", "",
             "| | SST acc | Quora acc | STS Pearson | overall |", "|---|---|---|---|---|",
             "| dev | " + " | ".join(_fmt(results.get(k)) for k in (*METRICS.values(), "eval_overall")) + " |",
             "| CS224N best reports (bert-base, GPU) | 0.528 | 0.877 | 0.868 | |",
             "| target | 0.53 | 0.88 | 0.87 | |"]
    for png in plot_best(best, data_dir):
        lines += ["", f"![{Path(png).stem}]({png})"]
    return "\n".join(lines)


def summary(root: Path, data_dir: str | None) -> str:
    parts = []
    found = {str(p.parent.relative_to(root)): p for p in sorted(root.glob("**/compare_techniques.json"))}
    order = [g for g in GROUPS if g in found] + sorted(g for g in found if g not in GROUPS)
    reference = json.loads(found["sampling"].read_text()) if "sampling" in found else None
    for group in order:
        results = json.loads(found[group].read_text())
        folder = found[group].parent
        if group != "sampling":
            results = with_reference(results, reference)
        text = write_group(results, folder)
        parts.append(f"#### {GROUPS.get(group, group)}\n\n{header(results)}\n\n{text}\n\n"
                     f"![dev curves]({folder / 'compare_techniques.png'})")
    simcse = root / "simcse_then_finetune.md"
    if simcse.exists():
        parts.append("#### SimCSE pre-training, then fine-tuning\n\n" + simcse.read_text().strip())
    hp = root / "hp_search" / "hp_search.json"
    if hp.exists():
        parts.append("#### Hyper-parameter search (Optuna)\n\n" + hp_table(json.loads(hp.read_text())))
    ensemble = root / "ensemble" / "ensemble_results.json"
    if ensemble.exists():
        parts.append("#### Ensemble (`hf-mtbert evaluate a,b`)\n\n" + ensemble_table(json.loads(ensemble.read_text())))
    if (root / "best" / "eval_results.json").exists():
        parts.append("#### The released configuration\n\n" + best_section(root / "best", data_dir))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    parser.add_argument("--readme", default=None, help=f"replace the README part between {BEGIN} and {END}")
    args = parser.parse_args()
    text = summary(Path(args.results), args.data_dir)
    (Path(args.results) / "summary.md").write_text(text)
    print(text)
    if args.readme:
        readme = Path(args.readme)
        content = readme.read_text()
        if BEGIN not in content or END not in content:
            parser.error(f"{readme} has no {BEGIN} ... {END} block to fill")
        before, rest = content.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        readme.write_text(f"{before}{BEGIN}\n{text}{END}{after}")


if __name__ == "__main__":
    main()
