"""BertConfig: every size of BERT in one dataclass, with Hugging Face's field names."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

ACTIVATIONS = ("gelu", "gelu_new", "relu")
IGNORE_INDEX = -100  # a label that adds nothing to a loss (torch's cross_entropy default)


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact erf GELU, as BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 2  # classes of a classification head (Hugging Face keeps it as id2label)
    label_names: tuple[str, ...] | None = None  # the classes' names (id2label); None: LABEL_i

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}): each head gets hidden_size / heads dimensions")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.label_names is not None:
            self.label_names = tuple(self.label_names)
            if len(self.label_names) != self.num_labels:
                raise ValueError(f"{len(self.label_names)} label_names for num_labels "
                                 f"{self.num_labels}: give one name per class")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # Presets: Google's BERT miniatures (tiny, mini) and the two sizes of the paper.
    @classmethod
    def tiny(cls, **overrides) -> BertConfig:
        return cls(**{**dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=512), **overrides})

    @classmethod
    def mini(cls, **overrides) -> BertConfig:
        return cls(**{**dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                             intermediate_size=1024), **overrides})

    @classmethod
    def base(cls, **overrides) -> BertConfig:
        return cls(**overrides)

    @classmethod
    def large(cls, **overrides) -> BertConfig:
        return cls(**{**dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096), **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> BertConfig:
        presets = {"tiny": cls.tiny, "mini": cls.mini, "base": cls.base, "large": cls.large}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**overrides)

    # Hugging Face config.json in and out.
    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        """Build from a Hugging Face config dict; keys this model does not use are ignored."""
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"not a BERT config: model_type is {d['model_type']!r}")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported, "
                             f"got {d['position_embedding_type']!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "id2label" in d:
            names = tuple(d["id2label"][str(i)] for i in range(len(d["id2label"])))
            kwargs["num_labels"] = len(names)
            if names != default_label_names(len(names)):
                kwargs["label_names"] = names
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"no BERT config at {path}: expected a config.json file")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["num_labels"], d["label_names"]  # written as id2label
        labels = dict(enumerate(self.label_names or default_label_names(self.num_labels)))
        return {"model_type": "bert", **d, "id2label": labels,
                "label2id": {v: k for k, v in labels.items()}}

    def to_json(self, path: str | Path, architectures: list[str] | None = None) -> None:
        d = self.to_dict()
        if architectures:
            d["architectures"] = architectures
        Path(path).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")


def default_label_names(num_labels: int) -> tuple[str, ...]:
    """Hugging Face's names for classes that have none: LABEL_0, LABEL_1, ..."""
    return tuple(f"LABEL_{i}" for i in range(num_labels))
