"""Hyper-parameter search with Optuna through `Trainer.hyperparameter_search` (hf_mtbert.training.run).

Searches learning rate, weight decay, sampling strategy and label smoothing (`default_hp_space`), maximising the
CS224N overall score on the dev sets. Every trial trains from the same start for the same number of steps. Writes
`<output_dir>/hp_search.json` (every trial's parameters, objective and seconds) and the Optuna study
(`hp_search.db`).

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python scripts/hp_search.py --trials 8 --max-steps 150 \\
        --max-eval-samples 400 --output-dir results/hp_search
"""

from __future__ import annotations

import argparse
import json

from hf_mtbert.training import MultiTaskTrainingArguments
from hf_mtbert.training.run import ModelDataArguments, hyperparameter_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--tasks", default="sst,quora,sts")
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=150, help="optimizer steps per trial")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=400, help="dev rows per task scored per trial")
    parser.add_argument("--bf16", default="false", choices=["false", "true", "auto"])
    parser.add_argument("--output-dir", default="results/hp_search")
    args = parser.parse_args()
    data_args = ModelDataArguments(model_name_or_path=args.model, tasks=args.tasks, data_dir=args.data_dir,
                                   max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples)
    train_args = MultiTaskTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=128, warmup_steps=0.1, lr_scheduler_type="linear", length_bucketing=True,
        word_embeddings="freeze", bf16=args.bf16, save_strategy="no", eval_strategy="no", report_to=[], seed=0)
    record = hyperparameter_search(data_args, train_args, n_trials=args.trials)
    print(json.dumps(record["best"], indent=2))


if __name__ == "__main__":
    main()
