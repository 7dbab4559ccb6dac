"""Data: the corpus, then (in later modules) pretraining examples and fine-tuning tasks."""

from .corpus import Document, Scene, Speech, StageDirection, load_corpus
from .pretraining import MLMMasker, PretrainingCollator, PretrainingDataset, pretraining_examples
from .tasks import TASKS, encode_task, evaluate, load_task

__all__ = ["Document", "Scene", "Speech", "StageDirection", "load_corpus", "MLMMasker",
           "PretrainingCollator", "PretrainingDataset", "pretraining_examples", "TASKS",
           "encode_task", "evaluate", "load_task"]
