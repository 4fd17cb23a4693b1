"""Building blocks for MultiTaskTrainer tests on the tiny random config."""

import torch
from _helpers import with_overrides
from _synthetic import task_datasets
from transformers import TrainerCallback

from hf_mtbert import MultiTaskBertModel
from hf_mtbert.training import MultiTaskTrainer, MultiTaskTrainingArguments

SIZES = {"sst": 48, "quora": 64, "sts": 40}


def args(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=2e-3, max_steps=12,
                lr_scheduler_type="linear", report_to=[], save_strategy="no", logging_steps=4, use_cpu=True,
                seed=0, sampling_strategy="sqrt", per_device_eval_batch_size=16, disable_tqdm=True,
                bf16="false")  # fp32 unless a test asks: exactness checks must not depend on the CPU's bf16 support
    return MultiTaskTrainingArguments(**{**base, **overrides})


def trainer(tmp_path, config, tokenizer, data=None, eval_data=None, dtype=torch.float32, **overrides):
    torch.manual_seed(0)
    model = MultiTaskBertModel(config).to(dtype)
    data = data if data is not None else task_datasets(config, SIZES)
    return MultiTaskTrainer(model=model, args=args(tmp_path, **overrides), train_dataset=data,
                            eval_dataset=eval_data, processing_class=tokenizer)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def three_tasks(config):
    """The tiny config with only the CS224N-like tasks sst, quora (cross) and sts (bi, cosine)."""
    return with_overrides(config, tasks=[t for t in config.tasks if t["name"] in SIZES])


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
