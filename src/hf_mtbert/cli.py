"""`hf-mtbert` command line: build checkpoints, train, evaluate, predict and push to the Hub.

`train` and `evaluate` take every `MultiTaskTrainingArguments` / `ModelDataArguments` field as an option
(`--learning_rate 5e-5`), or one JSON/YAML file holding them (`hf-mtbert train run.yaml`).
"""

from __future__ import annotations

import argparse
import json
import sys

DEMO_SENTENCES = [
    "A gorgeous, witty, seductive movie.",
    "The plot is thin and the jokes fall flat.",
    "It is a film, and it has actors in it.",
]
DEMO_PAIRS = [
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("How do I learn Python quickly?", "What is the capital of Australia?"),
    ("A man is playing a guitar.", "A person plays an instrument."),
    ("A man is playing a guitar.", "A chef is slicing onions."),
]


def _cmd_init(args: argparse.Namespace) -> None:
    from .checkpoint import build_checkpoint

    path = build_checkpoint(args.base, args.output, overwrite=args.overwrite)
    print(f"saved a multi-task checkpoint from {args.base} to {path}")


def _load(path: str):
    # No trust_remote_code needed: importing this package (cli lives in it) registered the Auto classes.
    from transformers import AutoModel

    from .checkpoint import load_tokenizer
    from .configuration_mtbert import hub_load_kwargs

    hub = hub_load_kwargs(path, {})
    return AutoModel.from_pretrained(path, **hub), load_tokenizer(path, **hub)


# What `hf-mtbert train` uses when nothing is given: a run of about 15 minutes on a 2-core CPU.
TRAIN_DEFAULTS = {
    "output_dir": "checkpoints/mtbert-minilm",
    "num_train_epochs": 1.5,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "learning_rate": 1e-4,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "sampling_strategy": "sqrt",
    "length_bucketing": True,
    "word_embeddings": "freeze",
    "eval_strategy": "no",  # one dev evaluation at the end (Quora dev alone is ~2.5 CPU minutes)
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 50,
    "report_to": "tensorboard",
}


def _parse_run_args(rest: list[str], defaults: dict):
    """(ModelDataArguments, MultiTaskTrainingArguments) from options or one .json/.yaml file."""
    from transformers import HfArgumentParser

    from .training import MultiTaskTrainingArguments
    from .training.run import ModelDataArguments

    parser = HfArgumentParser((ModelDataArguments, MultiTaskTrainingArguments))
    if len(rest) == 1 and rest[0].endswith((".json", ".yaml", ".yml")):
        import yaml  # JSON is YAML too

        with open(rest[0], encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        return parser.parse_dict({**defaults, **values})
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=rest)


def _cmd_train(args: argparse.Namespace, rest: list[str]) -> None:
    from .hardware import cpu_info
    from .training.run import summarize, train

    data_args, train_args = _parse_run_args(rest, TRAIN_DEFAULTS)
    tasks = data_args.tasks or "the checkpoint's tasks (CS224N for a plain BERT)"
    print(f"training {tasks} from {data_args.model_name_or_path} on {cpu_info().describe()}; "
          f"bf16={'on' if train_args.bf16 else 'off'}")
    metrics = train(data_args, train_args)
    print(f"\nsaved to {train_args.output_dir}; dev metrics:\n{summarize(metrics)}")


def _cmd_evaluate(args: argparse.Namespace, rest: list[str]) -> None:
    from .training.run import evaluate, evaluate_embeddings, evaluate_ensemble, summarize

    defaults = {"output_dir": "evaluation", "report_to": "none", "per_device_eval_batch_size": 128}
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--embeddings", action="store_true")
    flags.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    extra, rest = flags.parse_known_args(rest)
    data_args, eval_args = _parse_run_args(rest, defaults)
    if extra.embeddings:
        metrics = evaluate_embeddings(data_args, pooling=extra.pooling, batch_size=eval_args.per_device_eval_batch_size)
        print("\n".join(f"  {k:<20}  {v:.4f}" if isinstance(v, float) else f"  {k:<20}  {v}" for k, v in metrics.items()))
    elif "," in data_args.model_name_or_path:
        metrics = evaluate_ensemble(data_args, eval_args)
        for task, info in metrics["tasks"].items():
            print(f"  {task}: checkpoints {info['members']} -> " + ", ".join(
                f"{k} {v:.4f}" for k, v in info["metrics"].items()))
        print(f"  combined: {json.dumps({k: round(v, 4) for k, v in metrics['combined'].items()})}")
        print(f"  ({metrics['note']})")
    else:
        metrics = evaluate(data_args, eval_args)
        print(summarize(metrics))
    print(json.dumps(metrics))


def _cmd_push(args: argparse.Namespace) -> None:
    import shutil
    from pathlib import Path

    from .card import write_model_card
    from .hub import push_checkpoint

    folder = Path(args.folder)
    if not (folder / "tokenizer_config.json").is_file():
        raise ValueError(f"{folder} has no tokenizer (tokenizer_config.json); save it with tokenizer.save_pretrained")
    code = Path(__file__).parent
    for name in ("configuration_mtbert.py", "modeling_mtbert.py", "pipeline_mtbert.py"):
        if not (folder / name).is_file():  # checkpoints saved by older versions lack the pipeline code
            shutil.copyfile(code / name, folder / name)
    if not args.no_card:
        print(f"wrote the model card {write_model_card(folder, args.repo_id)}")
    commit = push_checkpoint(folder, args.repo_id, revision=args.revision, private=args.private)
    print(f"pushed {folder} to {args.repo_id}" + (f" (revision {args.revision})" if args.revision else "")
          + f": {commit}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from .inference import predict, write_cs224n_predictions

    model, tokenizer = _load(args.checkpoint)
    if args.cs224n:
        splits = tuple(s.strip() for s in args.splits.split(","))
        for path in write_cs224n_predictions(model, tokenizer, args.output_dir, args.data_dir, splits):
            print(f"wrote {path}")
        return
    if not args.task or not args.text:
        raise ValueError("give --task and --text (or --cs224n to predict the CS224N dev and test files)")
    texts_b = args.text_b if args.text_b else None
    for text, result in zip(args.text, predict(model, tokenizer, args.task, args.text, texts_b), strict=True):
        print(json.dumps({"text": text, **result}))


def _cmd_demo(args: argparse.Namespace) -> None:
    from .checkpoint import build_checkpoint
    from .inference import predict

    path = build_checkpoint(args.base, args.output, overwrite=True)
    model, tokenizer = _load(str(path))
    print(f"checkpoint: {path} (encoder from {args.base}; task heads newly initialised, not trained)")
    for spec in (model.config.get_task(name) for name in model.config.task_names):
        print(f"\n[{spec.name}] {spec.kind}, {spec.input} input"
              + (f", {spec.pair_encoding}-encoded" if spec.input == "pair" else ""))
        if spec.input == "single":
            a, b = DEMO_SENTENCES, None
        else:
            a, b = [p[0] for p in DEMO_PAIRS], [p[1] for p in DEMO_PAIRS]
        for i, result in enumerate(predict(model, tokenizer, spec.name, a, b)):
            shown = a[i] if b is None else f"{a[i]} || {b[i]}"
            value = f"{result['label']} (p={result['score']:.2f})" if "label" in result else f"{result['score']:.2f}"
            print(f"  {value:<28} {shown}")
    print("\nUntrained heads give arbitrary classes; the STS cosine head needs no training, so its scores are "
          "already the encoder's similarity judgement.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hf-mtbert", description="Multi-task BERT for Hugging Face.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="build a multi-task checkpoint from a BERT checkpoint")
    p.add_argument("--base", default="minilm", help="BERT folder or Hub id; 'minilm' = bundled all-MiniLM-L6-v2")
    p.add_argument("--output", required=True, help="folder to write the checkpoint to")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("predict", help="predict one task for a few texts")
    p.add_argument("checkpoint")
    p.add_argument("--task")
    p.add_argument("--text", nargs="+")
    p.add_argument("--text-b", nargs="+", help="second sentences, for pair tasks")
    p.add_argument("--cs224n", action="store_true",
                   help="write predictions for the CS224N dev and *-test-student.csv files in their format")
    p.add_argument("--output-dir", default="predictions", help="where --cs224n writes its files")
    p.add_argument("--splits", default="dev,test", help="which CS224N splits --cs224n predicts")
    p.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("push", help="upload a checkpoint folder (weights, config, tokenizer, model and pipeline "
                       "code, model card, training arguments) to the Hub")
    p.add_argument("--repo-id", required=True, help="owner/name of the model repo (created if missing)")
    p.add_argument("--folder", default=TRAIN_DEFAULTS["output_dir"], help="the checkpoint folder to upload")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--no-card", action="store_true", help="keep the folder's README.md instead of rendering one")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("demo", help="build a checkpoint from MiniLM and print predictions for every task")
    p.add_argument("--base", default="minilm")
    p.add_argument("--output", default="checkpoints/mtbert-minilm-init")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="train the multi-task model (options: MultiTaskTrainingArguments and "
                       "ModelDataArguments fields, or one JSON/YAML file)", add_help=False)
    p.set_defaults(func=_cmd_train, takes_rest=True)
    p = sub.add_parser("evaluate", help="dev metrics of a checkpoint (--model_name_or_path DIR); with --embeddings "
                       "[--pooling mean|cls], alignment, uniformity and cosine STS Spearman of its sentence "
                       "embeddings on the STS dev set; with several comma-separated checkpoints, their per-task "
                       "ensemble", add_help=False)
    p.set_defaults(func=_cmd_evaluate, takes_rest=True)

    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if getattr(args, "takes_rest", False):
            args.func(args, rest)
        else:
            args.func(args)
    except (ValueError, OSError, ImportError) as err:
        print(f"hf-mtbert {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
