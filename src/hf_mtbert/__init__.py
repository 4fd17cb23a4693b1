"""hf_mtbert: one BERT-family encoder, several sentence tasks, Hugging Face-native."""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_mtbert import DEFAULT_PIPELINE_REPO, MultiTaskBertConfig, TaskSpec, default_tasks
from .modeling_mtbert import MultiTaskBertModel, MultiTaskBertOutput
from .pipeline_mtbert import PIPELINE_CLASSES, ParaphrasePipeline, SentimentPipeline, SimilarityPipeline

__version__ = "0.1.0"

# With the package imported, the Auto classes know "mtbert" without trust_remote_code ...
AutoConfig.register(MultiTaskBertConfig.model_type, MultiTaskBertConfig, exist_ok=True)
AutoModel.register(MultiTaskBertConfig, MultiTaskBertModel, exist_ok=True)
# ... and save_pretrained writes auto_map plus the remote-code files, so checkpoints load without it.
MultiTaskBertConfig.register_for_auto_class()
MultiTaskBertModel.register_for_auto_class("AutoModel")

# The task pipelines: pipeline("sentiment-mt", model=...) works once the package is imported.
for _task, _class in PIPELINE_CLASSES.items():
    PIPELINE_REGISTRY.register_pipeline(_task, pipeline_class=_class, pt_model=AutoModel, type="text",
                                        default={"model": (DEFAULT_PIPELINE_REPO, "main")})

__all__ = [
    "MultiTaskBertConfig",
    "MultiTaskBertModel",
    "MultiTaskBertOutput",
    "ParaphrasePipeline",
    "SentimentPipeline",
    "SimilarityPipeline",
    "TaskSpec",
    "default_tasks",
]
