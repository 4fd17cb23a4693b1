"""`hf-mtbert` command line: build checkpoints and run predictions."""

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
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _cmd_predict(args: argparse.Namespace) -> None:
    from .inference import predict

    model, tokenizer = _load(args.checkpoint)
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
    p.add_argument("--task", required=True)
    p.add_argument("--text", nargs="+", required=True)
    p.add_argument("--text-b", nargs="+", help="second sentences, for pair tasks")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo", help="build a checkpoint from MiniLM and print predictions for every task")
    p.add_argument("--base", default="minilm")
    p.add_argument("--output", default="checkpoints/mtbert-minilm-init")
    p.set_defaults(func=_cmd_demo)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, ImportError) as err:
        print(f"hf-mtbert {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
