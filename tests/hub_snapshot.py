"""Writes a tiny random-weight genmo/mochi-1-preview in the real repo's layout, as a folder or an offline Hub cache."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import random
import string
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from mochi_app.tiny_model import COMMON_WORDS, tiny_text_encoder, tiny_transformer, tiny_vae

REPO_ID = "genmo/mochi-1-preview"
COMMIT = "4ec647c70e12a7792ebb2eb2570b2a079a4cb954"  # made up, fixed: the cache is the same every time
VARIANT = "bf16"
SEED = 0
SPM_VOCAB_SIZE = 240  # about the most this small corpus gives; T5's real one has 32000
EXTRA_IDS = 100  # T5's sentinel tokens <extra_id_0> .. <extra_id_99>, numbered after the SentencePiece vocabulary
MODEL_MAX_LENGTH = 512
TRANSFORMER_SHARD_SIZE = "24KB"  # the bf16 transformer is ~45 KB: two shards
TEXT_ENCODER_SHARD_SIZE = "100KB"  # the fp32 text encoder is ~160 KB: two shards
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}  # ids 0, 1, 2 as in T5
# The Hub's default .gitattributes, trimmed to the kinds of file a diffusers repo holds: these are stored in LFS.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.ckpt", "*.h5", "*.model", "*.msgpack", "*.onnx", "*.pt", "*.pth", "*.safetensors")
)
README = """---
language:
- en
tags:
- video
license: apache-2.0
pipeline_tag: text-to-video
library_name: genmo
---

# Mochi 1 Preview, tiny random weights

The file layout of genmo/mochi-1-preview with tiny random weights, written by tests/hub_snapshot.py for tests.
"""


def write_repo(folder: Path) -> Path:
    """Write the repo's files (the real layout, tiny random weights) into `folder` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitattributes").write_text(GITATTRIBUTES)
    (folder / "README.md").write_text(README)
    vocab_size = write_tokenizer(folder / "tokenizer")
    _write_models(folder, vocab_size)
    _write_json(folder / "model_index.json", _model_index())
    return folder


def write_hub_cache(hf_home: Path, repo_id: str = REPO_ID) -> Path:
    """Write `repo_id` into `hf_home`'s Hub cache as a download leaves it; return the snapshot folder."""
    storage = hf_home / "hub" / "--".join(["models", *repo_id.split("/")])
    snapshot = storage / "snapshots" / COMMIT
    tree: dict[str, dict[str, Any]] = {}
    with TemporaryDirectory() as tmp:
        repo = write_repo(Path(tmp))
        for path in sorted(p for p in repo.rglob("*") if p.is_file()):
            name = path.relative_to(repo).as_posix()
            data = path.read_bytes()
            entry = _tree_entry(name, data)
            tree[name] = entry
            # As `hf_hub_download` names blobs: by the file's ETag, the sha256 for LFS files, else the git blob id.
            blob = storage / "blobs" / entry.get("lfs_sha256", entry["blob_id"])
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))  # relative, as huggingface_hub's `_create_symlink`
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes refs
    # The tree listing `snapshot_download` caches (huggingface_hub/_tree_cache.py, format 1), which offline
    # `DiffusionPipeline.download` reads through `get_cached_repo_tree` to compute the same allow patterns as online.
    (storage / "trees").mkdir(parents=True, exist_ok=True)
    with open(storage / "trees" / f"{COMMIT}.json", "w", encoding="utf-8") as f:
        json.dump({"format_version": 1, "files": {name: tree[name] for name in sorted(tree)}}, f, indent=1)
    return snapshot


def write_tokenizer(folder: Path) -> int:
    """T5's slow-tokenizer files around a locally trained SentencePiece model; return the vocabulary size."""
    import sentencepiece as spm

    words = list(dict.fromkeys(COMMON_WORDS))
    rng = random.Random(SEED)
    corpus = [" ".join(rng.sample(words, 8)) for _ in range(200)]
    corpus += [" ".join(chars) for chars in (string.ascii_letters, string.digits, string.punctuation)]
    model = io.BytesIO()
    spm.set_random_generator_seed(SEED)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece=SPECIAL_TOKENS["pad_token"],
        eos_piece=SPECIAL_TOKENS["eos_token"],
        unk_piece=SPECIAL_TOKENS["unk_token"],
        character_coverage=1.0,
        byte_fallback=False,
        num_threads=1,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())

    def special(content: str) -> dict[str, Any]:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    # As T5 numbers its sentinels: <extra_id_0> last, <extra_id_99> right after the SentencePiece pieces.
    extra_ids = {f"<extra_id_{i}>": SPM_VOCAB_SIZE + EXTRA_IDS - 1 - i for i in range(EXTRA_IDS)}
    sentinels = list(extra_ids)
    decoder = {str(i): special(token) for i, token in enumerate(SPECIAL_TOKENS.values())}
    decoder |= {str(i): special(token) for token, i in sorted(extra_ids.items(), key=lambda item: item[1])}
    _write_json(folder / "added_tokens.json", extra_ids)
    _write_json(
        folder / "special_tokens_map.json",
        {"additional_special_tokens": sentinels} | {key: special(token) for key, token in SPECIAL_TOKENS.items()},
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "added_tokens_decoder": {key: value | {"special": True} for key, value in decoder.items()},
            "additional_special_tokens": sentinels,
            "clean_up_tokenization_spaces": True,
            "extra_ids": EXTRA_IDS,
            "legacy": True,
            "model_max_length": MODEL_MAX_LENGTH,
            "sp_model_kwargs": {},
            "tokenizer_class": "T5Tokenizer",
        }
        | SPECIAL_TOKENS,
    )
    return SPM_VOCAB_SIZE + EXTRA_IDS


def _write_models(folder: Path, vocab_size: int) -> None:
    """The scheduler, and the three models as the real repo stores them: the transformer and the VAE in fp32
    and in the bf16 variant, T5 in fp32 only (a bf16 download must skip the fp32 files, and fall back for T5)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    FlowMatchEulerDiscreteScheduler(invert_sigmas=True).save_pretrained(folder / "scheduler")
    torch.manual_seed(SEED)
    tiny_text_encoder(vocab_size).save_pretrained(folder / "text_encoder", max_shard_size=TEXT_ENCODER_SHARD_SIZE)
    torch.manual_seed(SEED)
    transformer = tiny_transformer()
    transformer.save_pretrained(folder / "transformer", max_shard_size=TRANSFORMER_SHARD_SIZE)
    transformer.bfloat16().save_pretrained(
        folder / "transformer", variant=VARIANT, max_shard_size=TRANSFORMER_SHARD_SIZE
    )
    torch.manual_seed(SEED)
    vae = tiny_vae()
    vae.save_pretrained(folder / "vae")
    vae.bfloat16().save_pretrained(folder / "vae", variant=VARIANT)


def _model_index() -> dict[str, Any]:
    import diffusers

    return {
        "_class_name": "MochiPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": False,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "MochiTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLMochi"],
    }


def _tree_entry(name: str, data: bytes) -> dict[str, Any]:
    """The file's entry in the Hub's tree listing: git blob id and size, plus sha256 and size for LFS files."""
    basename = name.rsplit("/", 1)[-1]
    patterns = [line.split()[0] for line in GITATTRIBUTES.splitlines()]
    if not any(fnmatch.fnmatchcase(basename, pattern) for pattern in patterns):
        return {"size": len(data), "blob_id": _git_blob_id(data)}
    sha256 = hashlib.sha256(data).hexdigest()
    # In git the LFS file is its pointer, so the blob id is the pointer's.
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return {"size": len(data), "blob_id": _git_blob_id(pointer), "lfs_sha256": sha256, "lfs_size": len(data)}


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("hf_home", type=Path, help="the folder to use as HF_HOME")
    args = parser.parse_args(argv)
    print(write_hub_cache(args.hf_home))


if __name__ == "__main__":
    main()
