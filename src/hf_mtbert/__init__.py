"""hf_mtbert: one BERT-family encoder, several sentence tasks, Hugging Face-native."""

from transformers import AutoConfig, AutoModel

from .configuration_mtbert import MultiTaskBertConfig, TaskSpec, default_tasks
from .modeling_mtbert import MultiTaskBertModel, MultiTaskBertOutput

__version__ = "0.1.0"

# With the package imported, the Auto classes know "mtbert" without trust_remote_code ...
AutoConfig.register(MultiTaskBertConfig.model_type, MultiTaskBertConfig, exist_ok=True)
AutoModel.register(MultiTaskBertConfig, MultiTaskBertModel, exist_ok=True)
# ... and save_pretrained writes auto_map plus the remote-code files, so checkpoints load without it.
MultiTaskBertConfig.register_for_auto_class()
MultiTaskBertModel.register_for_auto_class("AutoModel")

__all__ = ["MultiTaskBertConfig", "MultiTaskBertModel", "MultiTaskBertOutput", "TaskSpec", "default_tasks"]
