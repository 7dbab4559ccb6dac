"""Data: the corpus, its token store, pretraining examples (MLM + NSP), fine-tuning tasks and
your own files."""

from .corpus import Document, Scene, Speech, StageDirection, load_corpus
from .files import read_labelled_files
from .pretraining import MLMMasker, PretrainingCollator, PretrainingDataset, pretraining_examples
from .store import TokenStore
from .tasks import TASK_NAMES, encode_task, load_task

__all__ = ["Document", "Scene", "Speech", "StageDirection", "load_corpus", "MLMMasker",
           "PretrainingCollator", "PretrainingDataset", "pretraining_examples", "TASK_NAMES",
           "encode_task", "load_task", "read_labelled_files", "TokenStore"]
