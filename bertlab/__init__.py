"""bertlab: BERT built from scratch, small enough to read, exact enough to load real checkpoints."""

from .attention import MultiHeadSelfAttention, scaled_dot_product_attention
from .checkpoint import CheckpointWarning, course_model_path, minilm_path
from .config import BertConfig
from .embeddings import BertEmbeddings
from .encoder import BertEncoder, BertLayer
from .model import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from .runtime import course_scale, default_device, notebook_setup

__version__ = "0.1.0"

__all__ = [
    "BertConfig", "BertEmbeddings", "BertEncoder", "BertLayer", "MultiHeadSelfAttention",
    "scaled_dot_product_attention", "BertModel", "BertForPreTraining", "BertForMaskedLM",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForMultipleChoice",
    "BertForQuestionAnswering", "CheckpointWarning", "course_model_path", "minilm_path",
    "course_scale", "default_device", "notebook_setup",
]
