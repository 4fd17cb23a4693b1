"""`MultiTaskTrainer`: `transformers.Trainer` with task sampling, task loss weighting, SMART, gradient surgery and
per-task evaluation.

It overrides hooks only: the train dataloader (a multi-task batch sampler), `compute_loss` (task weights and the
SMART terms), `training_step` (per-task backward passes and gradient surgery when it is on), `evaluate` (one pass per
task, task metrics, the CS224N overall score), `log` (per-task losses), and the checkpoint save/load hooks (sampler,
weighting, surgery and teacher state travel with every checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader
import torch.distributed as dist
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, speed_metrics
from transformers.utils import logging

from ..metrics import multitask_metrics, task_metrics
from .arguments import MultiTaskTrainingArguments
from .dataset import MultiTaskDataset
from .samplers import MultiTaskBatchSampler, build_sampler
from .smart import BregmanTeacher, EmbeddingTap, SmartRegularizer, divergence
from .surgery import GradientSurgery
from .weighting import LossMagnitudeWeights, UncertaintyWeights

logger = logging.get_logger(__name__)

STATE_FILE = "multitask_state.json"
UNCERTAINTY_FILE = "multitask_uncertainty.pt"
TEACHER_FILE = "multitask_bregman_teacher.pt"
OUTPUT_KEYS_NOT_PREDICTIONS = ["embeddings", "hidden_states", "attentions"]


class EpochDataLoader(DataLoader):
    """A DataLoader whose `set_epoch` reaches the multi-task batch sampler (the Trainer calls it each epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class _UpdateBregmanTeacher(TrainerCallback):
    """Moves SMART's momentum teacher towards the weights after every optimizer step."""

    def __init__(self, trainer: MultiTaskTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        teacher = self.trainer.bregman
        if teacher is not None:
            teacher.update(self.trainer.model, state.global_step, state.max_steps)


class TimeLimit(TrainerCallback):
    """Stops training once `minutes` of wall time have passed since it began, and asks for the evaluation and the
    checkpoint that the end of the run would bring (so a time-limited run loses nothing)."""

    def __init__(self, minutes: float, clock=time.monotonic):
        self.seconds, self.clock = minutes * 60, clock
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock() - self.start < self.seconds or state.global_step >= state.max_steps:
            return
        logger.warning(f"max_train_minutes={self.seconds / 60:g} reached at step {state.global_step} of "
                       f"{state.max_steps}: stopping (evaluating and saving first)")
        control.should_training_stop = True
        control.should_evaluate = args.eval_strategy != "no"
        control.should_save = args.save_strategy != "no"


class MultiTaskTrainer(Trainer):
    """Trains one `MultiTaskBertModel` on several tasks.

    Args:
        train_dataset: `{task: tokenized datasets.Dataset}` (see `hf_mtbert.data.tokenize_dataset`) or a
            `MultiTaskDataset`.
        eval_dataset: `{task: tokenized datasets.Dataset}`; `evaluate()` reports `eval_<task>_<metric>` and, with
            the CS224N tasks, `eval_overall`.
        data_collator: defaults to `MultiTaskCollator(processing_class)`.
    """

    def __init__(self, model=None, args: MultiTaskTrainingArguments | None = None, train_dataset=None,
                 eval_dataset=None, data_collator=None, processing_class=None, **kwargs):
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(f"MultiTaskTrainer needs MultiTaskTrainingArguments, got {type(args).__name__}")
        if model is None and kwargs.get("model_init") is None:
            raise ValueError("MultiTaskTrainer needs a model or a model_init")
        if model is None and (args.grad_surgery != "none" or args.smart_bregman_weight > 0):
            raise ValueError("model_init (hyper-parameter search) is not supported with grad_surgery or the SMART "
                             "Bregman term: both hold state tied to one model's parameters")
        reference = model if model is not None else kwargs["model_init"]()  # for the tasks and the collator
        known = reference.config.task_names
        if train_dataset is not None and not isinstance(train_dataset, MultiTaskDataset):
            train_dataset = MultiTaskDataset(self._check_tasks(train_dataset, known, "train_dataset"))
        if eval_dataset is not None:
            eval_dataset = self._check_tasks(eval_dataset, known, "eval_dataset")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("give processing_class=<the tokenizer> (or a data_collator) to pad batches")
            from ..data import MultiTaskCollator

            mlm = {t["name"]: t["mlm_probability"] for t in reference.config.tasks if t["kind"] == "mlm"}
            data_collator = MultiTaskCollator(processing_class, mlm_probability=mlm)
        if model is not None:
            self._prepare_model(model, args)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=data_collator, processing_class=processing_class, **kwargs)
        model = self.model
        tasks = model.config.task_names
        self.task_weight = args.weights_for(tasks)
        self.magnitudes = LossMagnitudeWeights(tasks, self.task_weight, args.loss_magnitude_momentum)
        self.uncertainty = None
        if args.task_weighting == "uncertainty":
            self.uncertainty = UncertaintyWeights({t: model.config.get_task(t).kind for t in tasks}).to(args.device)
        # SMART and the Bregman term compare output distributions: classification and regression heads only.
        self._smoothable = {t for t in tasks if model.config.get_task(t).kind in ("classification", "regression")}
        self.smart = None
        if args.smart:
            explicit = sorted(t for t, w in args.smart_weights.items() if w > 0 and t not in self._smoothable)
            if explicit:
                raise ValueError(f"smart_weights gives SMART to tasks {explicit}, but SMART regularises "
                                 "classification and regression heads only")
            weights = {t: w if t in self._smoothable else 0.0 for t, w in args.smart_weights_for(tasks).items()}
            self.smart = SmartRegularizer(
                weights, steps=args.smart_steps, step_size=args.smart_step_size,
                epsilon=args.smart_epsilon, noise_std=args.smart_noise_std, norm=args.smart_norm,
            )
            if args.bf16 and args.smart_epsilon < 1e-2:
                logger.warning(
                    f"smart_epsilon={args.smart_epsilon:g} is below bf16's resolution (about 4e-3 of a value): "
                    "a perturbation that small mostly rounds away when the perturbed embeddings are cast to bf16, "
                    "so the regulariser sees almost nothing. Train in fp32 or raise smart_epsilon."
                )
        if args.max_train_minutes is not None:
            self.add_callback(TimeLimit(args.max_train_minutes))
        self.bregman: BregmanTeacher | None = None  # made from the model at the first training step (or resume)
        if args.smart_bregman_weight > 0:
            self.add_callback(_UpdateBregmanTeacher(self))
        self.surgery = None
        if args.grad_surgery != "none":
            self.surgery = GradientSurgery(args.grad_surgery, self.model, tasks, seed=args.seed,
                                           cagrad_c=args.cagrad_c, gradvac_beta=args.gradvac_beta)
        # Per logged quantity (loss_<task>, smart_<task>, ...): the sum of its detached on-device values and their
        # count since the last log. Summed on the device and reduced across ranks only when logging, so a step pays
        # no host sync or collective for it.
        self._log_sums: dict[str, list] = {}
        self._train_sampler: MultiTaskBatchSampler | None = None

    @staticmethod
    def _prepare_model(model, args: MultiTaskTrainingArguments) -> None:
        """What the arguments change on the model itself: label smoothing, frozen word embeddings, gathering."""
        for head in model.heads.values():
            if args.label_smoothing is not None and head.spec.kind == "classification":
                head.spec.label_smoothing = args.label_smoothing  # the head's spec is what its loss reads
            if head.spec.kind == "contrastive":
                head.gather_across_ranks = args.contrastive_gather
        if args.label_smoothing is not None:
            for spec in model.config.tasks:  # and the config, so that saved checkpoints record it
                if spec.get("kind") == "classification":
                    spec["label_smoothing"] = args.label_smoothing
        if args.word_embeddings == "freeze":
            model.get_input_embeddings().weight.requires_grad_(False)

    def call_model_init(self, trial=None):
        """A fresh model from model_init (hyper-parameter search trials), prepared as the constructor does."""
        model = super().call_model_init(trial)
        self._prepare_model(model, self.args)
        return model

    @staticmethod
    def _check_tasks(datasets: Mapping, known: list[str], what: str) -> dict:
        if not isinstance(datasets, Mapping):
            raise TypeError(f"{what} must be a dict {{task name: dataset}}, got {type(datasets).__name__}")
        unknown = [t for t in datasets if t not in known]
        if unknown:
            raise ValueError(f"{what} has tasks {unknown} that the model has no head for; its tasks are {known}")
        empty = [t for t, d in datasets.items() if len(d) == 0]
        if empty:
            raise ValueError(f"{what}: the datasets of tasks {empty} are empty")
        return dict(datasets)

    # --- data ----------------------------------------------------------------------------------------------------
    def build_train_sampler(self) -> MultiTaskBatchSampler:
        args, data = self.args, self.train_dataset
        lengths = data.lengths() if args.length_bucketing else None
        if args.length_bucketing and lengths is None:
            raise ValueError("length_bucketing needs a 'length' column in every task's dataset (tokenize_dataset adds it)")
        batch_sizes = args.batch_sizes_for(data.names)
        bucket = None
        if lengths is not None:
            bucket = args.bucket_size_multiplier * max(batch_sizes.values()) * args.gradient_accumulation_steps
        return build_sampler(
            args.sampling_strategy, data.sizes, batch_sizes,
            seed=args.seed, gradient_accumulation_steps=args.gradient_accumulation_steps,
            world_size=args.world_size, rank=args.process_index,
            epoch_size=args.epoch_size, truncation_factor=args.truncation_factor,
            num_epochs=max(1, math.ceil(args.num_train_epochs)), temperature=args.sampling_temperature,
            lengths=lengths, bucket_size=bucket, sequential_epochs=args.sequential_epochs,
        )

    def get_train_dataloader(self) -> DataLoader:
        """A DataLoader over the multi-task batch sampler. It is not sharded by accelerate: the sampler already
        gives each rank its own slice of the same task's batch."""
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset")
        self._train_sampler = self.build_train_sampler()
        return EpochDataLoader(
            self.train_dataset,
            batch_sampler=self._train_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
        )

    # --- loss ----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "task_batches" in inputs:  # concurrent: one batch of every task, losses summed
            loss = sum(self._task_loss(model, task, batch)[0] for task, batch in inputs["task_batches"].items())
            return (loss, None) if return_outputs else loss
        inputs = dict(inputs)
        task = inputs.pop("task")
        loss, outputs = self._task_loss(model, task, inputs)
        return (loss, outputs) if return_outputs else loss

    def _task_loss(self, model, task: str, inputs: dict):
        """One task's training loss: its task loss plus the SMART terms when they are on, times its task weight."""
        smart = self.smart if model.training and self.smart is not None and self.smart.weight(task) > 0 else None
        if smart is None:
            outputs = model(task=task, **inputs)
        else:
            unwrapped = self.accelerator.unwrap_model(model)
            features = {k: v for k, v in inputs.items() if k != "labels"}
            kind = unwrapped.config.get_task(task).kind
            with EmbeddingTap(unwrapped.bert.embeddings) as tap:
                outputs = model(task=task, **inputs)
                if outputs.loss is not None:
                    adversarial = smart(lambda: unwrapped(task=task, **features).logits, tap, kind, outputs.logits)
        loss = outputs.loss
        if loss is None:
            raise ValueError(f"the batch of task {task!r} has no labels, so there is no loss to train on")
        if not model.training:
            return loss, outputs
        self._accumulate_log(f"loss_{task}", loss)
        task_loss = loss
        if smart is not None:
            self._accumulate_log(f"smart_{task}", adversarial)
            loss = loss + smart.weight(task) * adversarial
        if self.args.smart_bregman_weight > 0 and task in self._smoothable:
            proximal = self._bregman_term(model, task, inputs, outputs.logits)
            self._accumulate_log(f"bregman_{task}", proximal)
            loss = loss + self.args.smart_bregman_weight * proximal
        weighting = self.args.task_weighting
        if weighting == "uncertainty":
            loss = self.uncertainty(task, loss) * self.task_weight[task]
        elif weighting == "loss_magnitude":
            # The weights need this step's task loss on the host, the same on every rank.
            value = float(self._mean_across_ranks(task_loss.detach().float()))
            loss = loss * self.magnitudes.weight(task)
            self.magnitudes.update(task, value)
        else:
            loss = loss * self.task_weight[task]
        return loss, outputs

    def _bregman_term(self, model, task: str, inputs: dict, logits: torch.Tensor) -> torch.Tensor:
        """ℓ_s(f(x; θ), f(x; θ̃)) against the momentum teacher θ̃ (SMART's Bregman proximal point term)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if self.bregman is None:
            self.bregman = self._new_teacher()
        features = {k: v for k, v in inputs.items() if k != "labels"}
        target = self.bregman.logits(task, features)
        return divergence(unwrapped.config.get_task(task).kind, logits, target)

    def _new_teacher(self) -> BregmanTeacher:
        args = self.args
        return BregmanTeacher(self.model, momentum=args.smart_bregman_momentum,
                              early_momentum=args.smart_bregman_early_momentum)

    def _accumulate_log(self, key: str, value: torch.Tensor) -> None:
        sums = self._log_sums.setdefault(key, [0.0, 0])
        sums[0] = sums[0] + value.detach().float()
        sums[1] += 1

    def _mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.args.world_size > 1:
            return self.accelerator.reduce(value, reduction="mean")
        return value

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.uncertainty is not None and not any(
            p is self.uncertainty.log_vars for g in optimizer.param_groups for p in g["params"]
        ):
            optimizer.add_param_group({"params": [self.uncertainty.log_vars], "weight_decay": 0.0})
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.surgery is None:
            loss = super().training_step(model, inputs, num_items_in_batch)
        else:
            loss = self._surgery_step(model, inputs)
        # The uncertainty weights live outside the DDP model: average their gradients across ranks ourselves.
        if (self.uncertainty is not None and self.args.world_size > 1
                and self.accelerator.gradient_state.sync_gradients and self.uncertainty.log_vars.grad is not None):
            grad = self.uncertainty.log_vars.grad
            grad.copy_(self.accelerator.reduce(grad, reduction="mean"))
        return loss

    def _surgery_step(self, model, inputs) -> torch.Tensor:
        """One micro-batch with gradient surgery: a backward pass per task into that task's gradient buffer (never
        synchronised by DDP), and on the micro-batch that ends the optimizer step, the buffers averaged across ranks,
        combined and written to `.grad`. Projecting once per optimizer step keeps gradient accumulation exact."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        if "task_batches" not in inputs:
            raise RuntimeError("gradient surgery needs one batch per task each step (sampling_strategy='concurrent')")
        total = torch.zeros((), device=self.args.device)
        no_sync = model.no_sync if hasattr(model, "no_sync") else contextlib.nullcontext
        with no_sync():
            for task, batch in inputs["task_batches"].items():
                self.surgery.select(task)
                with self.compute_loss_context_manager():
                    loss = self._task_loss(model, task, batch)[0]
                loss = loss / self.current_gradient_accumulation_steps
                self.accelerator.backward(loss)
                total += loss.detach()
        if self.accelerator.gradient_state.sync_gradients:
            reduce = self._average_across_ranks_ if self.args.world_size > 1 else None
            weights = self.surgery.apply(self.state.global_step, reduce)
            for task, w in zip(self.surgery.tasks, weights.tolist(), strict=True):
                self._accumulate_log(f"surgery_weight_{task}", torch.tensor(w))
        return total

    def _average_across_ranks_(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor)
        tensor.div_(self.args.world_size)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add each task's mean loss (and SMART/surgery terms) since the last one
            seen = sorted(k for k, (_, count) in self._log_sums.items() if count)
            if seen:  # one collective for all; every rank trained the same tasks, so the counts agree
                means = torch.stack([torch.as_tensor(self._log_sums[k][0] / self._log_sums[k][1]).float().to(
                    self.args.device) for k in seen])
                for key, mean in zip(seen, self._mean_across_ranks(means).tolist(), strict=True):
                    logs[key] = float(f"{mean:.5g}")  # significant digits: SMART terms can be ~1e-6
            self._log_sums = {}
            if self.args.task_weighting == "uncertainty":
                for task, s in zip(self.uncertainty.tasks, self.uncertainty.log_vars.tolist(), strict=True):
                    logs[f"log_var_{task}"] = round(s, 4)
        super().log(logs, start_time)

    # --- evaluation ----------------------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate every task's dataset: `<prefix>_<task>_loss`, the task's metrics, and the combined scores."""
        datasets = self.eval_dataset if eval_dataset is None else eval_dataset
        if datasets is None:
            raise ValueError("MultiTaskTrainer: evaluation requires an eval_dataset {task: dataset}")
        datasets = self._check_tasks(datasets, self.model.config.task_names, "eval_dataset")
        ignore_keys = list(ignore_keys or []) + OUTPUT_KEYS_NOT_PREDICTIONS
        self._memory_tracker.start()
        start_time = time.time()
        metrics: dict[str, float] = {}
        per_task: dict[str, dict[str, float]] = {}
        samples = 0
        for task, dataset in datasets.items():
            spec = self.model.config.get_task(task)
            loader = self.get_eval_dataloader(MultiTaskDataset({task: dataset}))
            loss_only = spec.kind in ("contrastive", "mlm")  # no per-row predictions to score, only the loss
            output = self.evaluation_loop(loader, description=f"Evaluation {task}", prediction_loss_only=loss_only,
                                          ignore_keys=ignore_keys, metric_key_prefix=f"{metric_key_prefix}_{task}")
            samples += output.num_samples
            metrics.update({k: v for k, v in output.metrics.items() if k.endswith("_loss")})
            if spec.kind == "mlm" and f"{metric_key_prefix}_{task}_loss" in metrics:
                metrics[f"{metric_key_prefix}_{task}_perplexity"] = math.exp(metrics[f"{metric_key_prefix}_{task}_loss"])
            if output.label_ids is not None and not loss_only:
                logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
                per_task[task] = task_metrics(spec.kind, logits, output.label_ids, spec.num_labels)
        metrics.update({f"{metric_key_prefix}_{k}": v for k, v in multitask_metrics(per_task).items()})
        metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=samples))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Contrastive and MLM batches have a loss even without labels (the Trainer only computes one with them)."""
        task = inputs.get("task")
        if task is not None and self.model.config.get_task(task).kind in ("contrastive", "mlm"):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs)
            return loss.detach(), None, None
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        state = {
            "sampler": None if self._train_sampler is None else self._train_sampler.state_dict(),
            "loss_magnitude": self.magnitudes.state_dict(),
            "surgery": None if self.surgery is None else self.surgery.state_dict(),
        }
        with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)
        if self.uncertainty is not None:
            torch.save(self.uncertainty.state_dict(), os.path.join(folder, UNCERTAINTY_FILE))
        if self.bregman is not None:
            torch.save(self.bregman.state_dict(), os.path.join(folder, TEACHER_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} has no {STATE_FILE}: it was not written by MultiTaskTrainer, so the task stream "
                "cannot be resumed exactly. Start a new run from its weights instead (from_pretrained)."
            )
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if state["sampler"] is not None and self._train_sampler is not None:
            self._train_sampler.check_resumable(state["sampler"])
        self.magnitudes.load_state_dict(state["loss_magnitude"])
        if self.uncertainty is not None:
            self.uncertainty.load_state_dict(torch.load(os.path.join(checkpoint, UNCERTAINTY_FILE)))
        if self.surgery is not None and state.get("surgery") is not None:
            self.surgery.load_state_dict(state["surgery"])
        if self.args.smart_bregman_weight > 0:
            self.bregman = self._new_teacher()
            teacher = os.path.join(checkpoint, TEACHER_FILE)
            if os.path.isfile(teacher):
                self.bregman.load_state_dict(torch.load(teacher, map_location=self.args.device))
            else:
                logger.warning(f"{checkpoint} has no {TEACHER_FILE}: the Bregman teacher starts from its weights")


def per_task_predictions(trainer: MultiTaskTrainer, datasets: Mapping) -> dict[str, np.ndarray]:
    """Raw logits per task for `{task: tokenized dataset}` (labels not needed), in dataset order."""
    out = {}
    for task, dataset in datasets.items():
        result = trainer.predict(MultiTaskDataset({task: dataset}), ignore_keys=OUTPUT_KEYS_NOT_PREDICTIONS)
        out[task] = result.predictions[0] if isinstance(result.predictions, tuple) else result.predictions
    return out
