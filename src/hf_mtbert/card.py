"""Model cards for multi-task checkpoints, rendered with huggingface_hub's `ModelCard` from
`model_cards/mtbert_template.md`, with the metrics the checkpoint's own training run wrote (`eval_results.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_mtbert import MultiTaskBertConfig

TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / "mtbert_template.md"
EVAL_RESULTS = "eval_results.json"
TRAINING_ARGS = "training_args.json"

# What the card says about the CS224N tasks: the data, and the Hub task type and data set id of model-index.
KNOWN_DATA = {
    "sst": ("SST-5 sentences (CS224N split, 8,544 train)", "text-classification", "sst5"),
    "quora": ("Quora question pairs (13,507 of the CS224N train pairs)", "text-classification", "quora"),
    "sts": ("STS benchmark pairs (CS224N re-split, 6,040 train)", "sentence-similarity", "stsb"),
    "cfimdb": ("CFIMDB movie reviews (CS224N)", "text-classification", "cfimdb"),
}
METRICS = {"classification": ("accuracy", "macro_f1", "f1"), "regression": ("pearson", "spearman"),
           "contrastive": ("loss",), "mlm": ("perplexity",)}
SHOWN_SETTINGS = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                  "learning_rate", "warmup_steps", "weight_decay", "lr_scheduler_type", "sampling_strategy",
                  "task_weighting", "length_bucketing", "word_embeddings", "bf16", "smart", "smart_weights",
                  "grad_surgery", "seed")
PIPELINE_EXAMPLES = {
    "sentiment-mt": ("sentiment", '"What a lovely film."', ("classification", False)),
    "paraphrase-mt": ("paraphrase", '{"text": "How do I learn Python?", "text_pair": "What is the best way to learn '
                      'Python?"}', ("classification", True)),
    "similarity-mt": ("similarity", '("A man plays a guitar.", "A person plays an instrument.")',
                      ("regression", True)),
}


CITATIONS = {
    "smart": """@inproceedings{jiang2020smart,
  title = {SMART: Robust and Efficient Fine-Tuning for Pre-trained Natural Language Models through Principled
           Regularized Optimization},
  author = {Jiang, Haoming and He, Pengcheng and Chen, Weizhu and Liu, Xiaodong and Gao, Jianfeng and Zhao, Tuo},
  booktitle = {ACL},
  year = {2020}
}""",
    "pcgrad": """@inproceedings{yu2020gradient,
  title = {Gradient Surgery for Multi-Task Learning},
  author = {Yu, Tianhe and Kumar, Saurabh and Gupta, Abhishek and Levine, Sergey and Hausman, Karol and Finn, Chelsea},
  booktitle = {NeurIPS},
  year = {2020}
}""",
    "simcse": """@inproceedings{gao2021simcse,
  title = {SimCSE: Simple Contrastive Learning of Sentence Embeddings},
  author = {Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
  booktitle = {EMNLP},
  year = {2021}
}""",
}


def _citations(tasks: list[dict], training: dict) -> list[str]:
    used = []
    if training.get("smart") or training.get("smart_bregman_weight"):
        used.append("smart")
    if training.get("grad_surgery") == "pcgrad":
        used.append("pcgrad")
    if any(t["kind"] == "contrastive" for t in tasks):
        used.append("simcse")
    return [CITATIONS[k] for k in used]


def _describe(task: dict[str, Any]) -> dict[str, str]:
    if task["input"] == "pair":
        inputs = "sentence pair, " + ("encoded together" if task["pair_encoding"] == "cross" else "encoded apart")
    else:
        inputs = "one sentence"
    if task["kind"] != "mlm":
        inputs += ", [CLS] pooler" if task.get("pooling") == "cls" else ", mean of the token states"
    if task["kind"] == "classification":
        head = f"{task['num_labels']} classes ({', '.join(task['id2label'].values())})"
    elif task["kind"] == "regression":
        head = ("cosine of the two embeddings" if task.get("combine") == "cosine" else "linear score") + (
            f", range {task['label_range'][0]:g}-{task['label_range'][1]:g}" if task.get("label_range") else "")
    elif task["kind"] == "contrastive":
        head = f"{task['objective']} contrastive, τ={task['temperature']}"
    else:
        head = "masked-LM head tied to the word embeddings"
    data = KNOWN_DATA.get(task["name"], ("the user's data",))[0]
    return {"name": task["name"], "kind": task["kind"], "input_description": inputs, "head_description": head,
            "data": data}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def model_card(folder: str | Path, repo_id: str | None = None, template_path: str | Path | None = None) -> ModelCard:
    """The model card of the checkpoint in `folder`: its tasks, its own dev results (model-index too), its training
    settings (`training_args.json`), how to load it and run each pipeline, limitations and citations."""
    folder = Path(folder)
    template = Path(template_path) if template_path is not None else TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"the model card template {template} is missing (it lives in the source tree's "
                                "model_cards/); pass template_path=")
    config = MultiTaskBertConfig.from_pretrained(folder)
    tasks = config.tasks
    results = _read_json(folder / EVAL_RESULTS) or {}
    training = _read_json(folder / TRAINING_ARGS) or {}
    repo_id = repo_id or folder.name
    base_model = training.get("base_model") or "a BERT checkpoint (not recorded)"

    rows, eval_results = [], []
    for task in tasks:
        for metric in METRICS[task["kind"]]:
            key = f"eval_{task['name']}_{metric}"
            if key not in results:
                continue
            value = float(results[key])
            rows.append({"task": task["name"], "metric": metric, "value": f"{value:.4f}"})
            name, task_type, dataset = KNOWN_DATA.get(task["name"], (task["name"], "text-classification",
                                                                      task["name"]))
            eval_results.append(EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=name,
                                           dataset_split="validation", metric_type=metric, metric_value=value))
    if "eval_overall" in results:
        rows.append({"task": "all three", "metric": "CS224N overall", "value": f"{float(results['eval_overall']):.4f}"})
    settings = [{"name": k, "value": training[k]} for k in SHOWN_SETTINGS if k in training]
    for key, label in (("train_steps", "optimizer steps"), ("train_seconds", "training seconds")):
        if key in results:
            settings.append({"name": label, "value": results[key]})

    kinds = {(t["kind"], t["input"] == "pair") for t in tasks}
    pipelines = [{"task": task, "variable": variable, "example": example}
                 for task, (variable, example, need) in PIPELINE_EXAMPLES.items() if need in kinds]
    card_data = ModelCardData(
        language="en", license="apache-2.0", library_name="transformers", model_name=repo_id,
        base_model=base_model if "/" in base_model and not Path(base_model).exists() else None,
        tags=["hf-mtbert", "multi-task", "bert", *(t["name"] for t in tasks)],
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data, template_path=str(template), model_name=repo_id, repo_id=repo_id, base_model=base_model,
        tasks=[_describe(t) for t in tasks], results_rows=rows, training_rows=settings,
        machine=results.get("machine"), first_task=tasks[0]["name"], pipelines=pipelines,
        quora_caveat="minilm" in base_model.lower() and any(t["name"] == "quora" for t in tasks),
        citations=_citations(tasks, training),
    )


def write_model_card(folder: str | Path, repo_id: str | None = None) -> Path:
    """Render `model_card(folder)` into folder/README.md and return its path."""
    path = Path(folder) / "README.md"
    model_card(folder, repo_id).save(path)
    return path


__all__ = ["model_card", "write_model_card"]
