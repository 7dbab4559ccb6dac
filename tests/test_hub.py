"""Hub names in `from_pretrained`, resolved through a hand-made Hugging Face cache: no network."""

import hashlib
import socket
import sys
from pathlib import Path

import pytest
import torch

import bertlab
from bertlab.checkpoint import checkpoint_directory

NAME = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def cache_model(cache: Path, name: str, source: Path) -> Path:
    """Put `source`'s files in `cache` as huggingface_hub does: blobs named by their hash,
    `snapshots/<commit>/` linking to them, `refs/main` holding the commit (no newline)."""
    repo = cache / ("models--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in FILES:
        blob = hashlib.sha256((source / file).read_bytes()).hexdigest()
        (repo / "blobs" / blob).symlink_to(source / file)
        (snapshot / file).symlink_to(Path("../../blobs") / blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty HF_HUB_CACHE with HF_HUB_OFFLINE=1, and any connection attempt recorded and
    refused. huggingface_hub reads both variables when first imported, so its constants are set
    as well."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("test_hub: no network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield cache
    assert not attempts, f"something tried the network: {attempts}"


def last_hidden_state(model):
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        return model.eval()(ids).last_hidden_state


@pytest.mark.parametrize("name", [NAME, "all-MiniLM-L6-v2"])
def test_a_cached_hub_name_loads_like_its_folder(offline_cache, name):
    snapshot = cache_model(offline_cache, name, bertlab.minilm_path())
    assert checkpoint_directory(name) == snapshot
    got = last_hidden_state(bertlab.BertModel.from_pretrained(name))
    want = last_hidden_state(bertlab.BertModel.from_pretrained(bertlab.minilm_path()))
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["bert-base-uncased", "google-bert/bert-base-uncased"])
def test_an_uncached_name_offline_is_a_clear_error(offline_cache, name):
    cache_model(offline_cache, NAME, bertlab.minilm_path())  # another model is cached
    with pytest.raises(ValueError, match=rf"no folder {name} here, and no Hub model {name} in "
                                         r"the cache .* \(HF_HUB_OFFLINE is set\)"):
        bertlab.BertModel.from_pretrained(name)


def test_without_huggingface_hub_a_name_is_a_clear_error_and_a_folder_still_loads(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(ValueError, match=r"huggingface_hub is not installed.*"
                                         r"`pip install huggingface_hub`, or pass a local folder"):
        bertlab.BertModel.from_pretrained(NAME)
    bertlab.BertModel.from_pretrained(bertlab.minilm_path())


@pytest.mark.parametrize("path", ["./nope", "runs/nope", "~/nope", "/nowhere/nope", "a/b/nope",
                                  Path("nope")])
def test_a_missing_path_is_a_missing_folder_not_a_hub_lookup(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # so runs/nope is a path into it, not the Hub's org `runs`
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # a Hub lookup would say so
    with pytest.raises(ValueError, match=r"not a BERT checkpoint directory: no such folder here"):
        bertlab.BertModel.from_pretrained(path)
