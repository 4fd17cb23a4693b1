"""Run by test_distributed.py under `torchrun`: a few MultiTaskTrainer steps, then each rank saves its weights.

    torchrun --nproc_per_node N ddp_train.py OUT_DIR PER_DEVICE_BATCH TOKENIZER [TECHNIQUES]

TECHNIQUES: `+`-joined from pcgrad, cagrad, gradvac (sampled concurrently, one batch per task per step), smart
(with a deterministic per-token initial perturbation, so that runs with different process counts can agree) and
contrastive (a supervised contrastive task with in-batch negatives gathered across ranks).
"""

import json
import sys
from pathlib import Path

import torch
from _synthetic import task_datasets
from transformers import AutoTokenizer

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.training import MultiTaskTrainer, MultiTaskTrainingArguments

out, batch, tokenizer_path = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
techniques = sys.argv[4].split("+") if len(sys.argv) > 4 else []
surgery = next((t for t in techniques if t not in ("smart", "contrastive")), "none")
contrastive = "contrastive" in techniques
config = MultiTaskBertConfig(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    tasks=[{"name": "sst", "num_labels": 5},
           {"name": "quora", "num_labels": 2, "input": "pair"},
           {"name": "sts", "kind": "regression", "input": "pair", "pair_encoding": "bi", "combine": "cosine",
            "pooling": "mean", "label_range": [0, 5]}]
    + ([{"name": "nli", "kind": "contrastive", "input": "pair", "pooling": "mean"}] if contrastive else []),
)
torch.manual_seed(0)
model = MultiTaskBertModel(config).double()  # float64: summation-order noise far below what the tests tell apart
initial = {k: v.clone() for k, v in model.state_dict().items()}
args = MultiTaskTrainingArguments(
    output_dir=str(out), per_device_train_batch_size=batch, max_steps=6, learning_rate=1e-2, optim="sgd",
    lr_scheduler_type="constant", report_to=[], save_strategy="no", use_cpu=True, seed=0,
    sampling_strategy="round_robin" if surgery == "none" else "concurrent", grad_surgery=surgery,
    disable_tqdm=True, logging_steps=1, smart="smart" in techniques, smart_epsilon=0.05, smart_step_size=0.05,
    contrastive_gather=contrastive,
)
data = task_datasets(config, {"sst": 40, "quora": 40, "sts": 40, **({"nli": 40} if contrastive else {})})
trainer = MultiTaskTrainer(model=model, args=args, train_dataset=data,
                           processing_class=AutoTokenizer.from_pretrained(tokenizer_path))
if trainer.smart is not None:
    trainer.smart.noise_fn = lambda e: 0.01 * torch.sin(1000 * e)
trainer.train()
torch.save(trainer.model.state_dict(), out / f"rank{args.process_index}.pt")
torch.save(initial, out / "initial.pt")
(out / f"log{args.process_index}.json").write_text(json.dumps(trainer.state.log_history))
