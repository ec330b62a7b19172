"""Peak GPU memory and time of each paper-scale GPU job's unit of work, in one process (issue 14).

Random-weight models of the exact shapes of Llama-3-8B-Instruct and Mistral-7B-Instruct-v0.1
(the ``source.config`` fields of config/paper-rehearsal.yaml), built directly on the device in the
paper's dtype (nothing is written to disk, no tokenizer, no hub), with the paper's RoPE base and
position window applied through ``synthctx.models.loading.config_overrides``. Every size comes
from config.yaml + config/paper.yaml (nested keys merged, as Snakemake does). Prompts are seeded
random token ids (below 49,152, SmolLM2's vocabulary, or the model's smaller one), the longest
``--context`` tokens and each next one 16 tokens shorter, so a batch is left-padded and carries
an attention mask as the real (length-sorted) batches do. No stop id: every decode runs its full
token budget.

Operations (each with the project's own functions; an out-of-memory error is recorded, not fatal):

- ``train``: the path of ``synthctx.train.lora.prepare_model_for_training`` (use_cache off,
  gradient checkpointing per ``train.gradient_checkpointing``, ``attach_lora`` with
  ``train.lora``), one micro-batch of ``train.batch_size`` rows of ``--context`` tokens with
  labels on the last 32 positions, ``target_token_loss`` + backward + grad-norm clipping + AdamW
  step (as ``train_condition``); seconds per micro-batch step (mean of 2 after 1 warm-up). An
  optimizer step of the paper is ``train.gradient_accumulation`` of these.
- ``evaluate``: ``synthctx.evaluate.generate.greedy_decode_hf`` with ``evaluate.batch_size``
  prompts and ``evaluate.max_new_tokens.mdqa`` new tokens (the HF backend: an upper bound of the
  paper's vLLM evaluation).
- ``heads``: retrieval-head capture decoding, ``synthctx.heads.capture.greedy_decode_batch``
  (``greedy_decode`` at batch 1) through ``decode_in_groups`` as ``detect_heads`` calls it, with
  ``heads.batch_size`` prompts and ``heads.max_new_tokens``; NIAH detection runs the same decode
  on prompts of at most ``heads.niah.lengths`` tokens.
- ``knockout``: ``synthctx.causal.interventions.mask_heads`` (``causal.knockout_operator``,
  ``causal.knockout_top_k`` heads spread over the layers) around
  ``synthctx.models.decoding.greedy_decode_batch``, as ``run_knockout`` decodes; ``causal.batch_size``
  prompts, ``evaluate.max_new_tokens.mdqa`` new tokens.
- ``patching``: donor and recipient on the device at once,
  ``synthctx.causal.patching.patched_greedy_decode_batch`` with ``causal.patch_top_k`` heads over
  as many layers, ``causal.batch_size`` prompts.

Seconds: per step (train) or per call (the decodes: one group of the job, after a short warm-up
call on 2 x 128 tokens). Peak memory: ``torch.cuda.max_memory_allocated`` / ``..._reserved``
from a reset right before the operation (resident weights included); "fits" = reserved < 80 GiB.
The JSON is rewritten after every operation, so a run cut short keeps what it measured.

    python3 benchmarks/probe_paper_memory.py --model both --out $OUT/probe.json       # one H200
    PYTHONPATH=src python benchmarks/probe_paper_memory.py --tiny --device cpu --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO / "src"))

OPS = ("train", "evaluate", "heads", "knockout", "patching")
# --model -> (paper.yaml models: entry for settings, paper-rehearsal.yaml entry for the exact shape)
MODELS = {
    "llama3-8b": ("llama3-8b-instruct", "llama3-8b-random"),
    "mistral-7b": ("mistral-7b-instruct", "mistral-7b-random"),
}
# Random prompt ids stay below the SmolLM2 tokenizer's size (the rehearsal's borrowed tokenizer).
SMOLLM2_VOCAB = 49152
# Training rows carry labels on their last this many positions (a short answer + end-of-turn).
TRAIN_TARGET_TOKENS = 32
# Prompt i of a batch is this many tokens shorter than prompt i-1 (left padding, masks).
PROMPT_LENGTH_STEP = 16
# --tiny: a 2-layer model of the same family for smoke runs (CPU or GPU).
TINY_FIELDS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 8,
               "num_key_value_heads": 2, "vocab_size": 1024}
TINY_CONTEXT = 1024
TINY_SLIDING_WINDOW = 256  # below TINY_CONTEXT, so Mistral's window is exercised
GPU_MEMORY_GIB = 80
GIB = 2**30


class IdsOnlyTokenizer:
    """What the project's functions ask of a tokenizer when they are given token ids and stop ids:
    its size and special ids (``random_init_config``), a pad id and ``decode`` (``greedy_decode_hf``
    decodes its answers; the text of random weights means nothing)."""

    def __init__(self, size: int, bos: int = 1, eos: int = 2):
        self.size, self.bos_token_id, self.eos_token_id, self.pad_token_id = size, bos, eos, eos

    def __len__(self) -> int:
        return self.size

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key; lists and scalars of ``over`` replace (Snakemake's rule)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def load_configs(paths) -> dict[str, Any]:
    import yaml

    cfg: dict[str, Any] = {}
    for path in paths:
        cfg = deep_merge(cfg, yaml.safe_load(Path(path).read_text()) or {})
    return cfg


def spread_heads(num_layers: int, num_heads: int, count: int) -> list[tuple[int, int]]:
    """``count`` heads over as many evenly spaced layers as there are (e.g. 10 of 32: layers 0, 3, ..., 28)."""
    count = min(count, num_layers * num_heads)
    return sorted({((i * num_layers) // count, i % num_heads) for i in range(count)})


def random_prompts(n: int, longest: int, id_limit: int, seed: int) -> list[list[int]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    lengths = [max(1, longest - i * PROMPT_LENGTH_STEP) for i in range(n)]
    return [torch.randint(3, id_limit, (length,), generator=gen).tolist() for length in lengths]


class Probe:
    def __init__(self, args, cfg: Mapping[str, Any], shapes: Mapping[str, Any]):
        import torch

        self.args, self.cfg, self.shapes = args, cfg, shapes
        self.device = args.device
        self.cuda = self.device.startswith("cuda")
        self.seed = int(cfg["study"]["seed"])
        self.rows: list[dict[str, Any]] = []
        self.meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if self.cuda else platform.processor() or "cpu",
                     "tiny": bool(args.tiny), "configs": [str(p) for p in args.configfile]}

    # ------------------------------------------------------------------ models

    def settings(self, name: str) -> dict[str, Any]:
        from synthctx.models.loading import model_settings

        settings = model_settings(self.cfg["models"][MODELS[name][0]])
        settings["context_tokens"] = self.context(name)
        return settings

    def context(self, name: str) -> int:
        if self.args.context:
            return int(self.args.context)
        return TINY_CONTEXT if self.args.tiny else int(self.cfg["models"][MODELS[name][0]]["context_tokens"])

    def dtype(self, name: str):
        import torch

        # As prepare_model_for_training: fp32 on the CPU, the spec's dtype on a GPU.
        return getattr(torch, self.settings(name)["dtype"]) if self.cuda else torch.float32

    def attention(self, name: str) -> str:
        from synthctx.train.lora import resolve_attention

        # flash_attention_2 when the package is installed, else SDPA (what the jobs end up with).
        return resolve_attention(self.settings(name)["attn_implementation"], self.device)

    def model_config(self, name: str):
        """The transformers config of ``name``: the exact shape (``random_init_config`` of the
        rehearsal's fields) with the paper's RoPE base and window (``config_overrides``)."""
        from synthctx.models.loading import config_overrides
        from synthctx.models.prepare import random_init_config

        source = self.shapes["models"][MODELS[name][1]]["source"]
        fields = dict(source["config"])
        if self.args.tiny:
            fields.update(TINY_FIELDS)
            if "sliding_window" in fields:
                fields["sliding_window"] = TINY_SLIDING_WINDOW
        tokenizer = IdsOnlyTokenizer(min(int(fields["vocab_size"]), SMOLLM2_VOCAB))
        config = random_init_config(source["architecture"], fields, tokenizer, where=f"{MODELS[name][1]}.source.config")
        settings = self.settings(name)
        for field, value in config_overrides(config, settings["rope_theta"], settings["context_tokens"],
                                             model_dir=name).items():
            setattr(config, field, value)
        return config, tokenizer

    def build(self, name: str, seed: int):
        """A random-weight model of ``name``'s exact shape, on the device, in eval mode."""
        import torch
        import transformers

        config, tokenizer = self.model_config(name)
        model_cls = getattr(transformers, config.architectures[0])
        dtype = self.dtype(name)
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(self.device):
                model = model_cls(config)
        finally:
            torch.set_default_dtype(previous)
        model.set_attn_implementation(self.attention(name))
        model.generation_config.eos_token_id = None  # no stop id: every decode runs its budget
        if next(model.parameters()).dtype != dtype:
            raise RuntimeError(f"{name}: built in {next(model.parameters()).dtype}, expected {dtype}")
        self.meta.setdefault("models", {})[name] = {
            "architecture": config.architectures[0], "parameters": sum(p.numel() for p in model.parameters()),
            "num_hidden_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "vocab_size": config.vocab_size, "rope_parameters": dict(config.rope_parameters or {}),
            "max_position_embeddings": config.max_position_embeddings,
            "sliding_window": getattr(config, "sliding_window", None)}
        return model.eval(), tokenizer

    # ------------------------------------------------------------------ measurement

    def free(self) -> None:
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def measure(self, name: str, op: str, batch: int, new_tokens: int | None, run: Callable[[], dict[str, Any]]):
        """Run ``op``; record peak memory from a reset right before it, its seconds, or its OOM."""
        import torch

        self.free()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        row: dict[str, Any] = {"model": name, "op": op, "batch": batch, "context": self.context(name),
                               "new_tokens": new_tokens, "attn_implementation": self.attention(name),
                               "dtype": str(self.dtype(name)).removeprefix("torch."), "status": "ok", "error": None}
        print(f"[probe] {name} {op}: batch {batch} x {row['context']} tokens ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            row.update(run())
        except torch.OutOfMemoryError as err:
            row.update(status="oom", error=str(err).splitlines()[0][:300], seconds=None)
        except RuntimeError as err:  # some kernels report OOM as a plain RuntimeError
            if "out of memory" not in str(err).lower():
                raise
            row.update(status="oom", error=str(err).splitlines()[0][:300], seconds=None)
        row["wall_seconds"] = round(time.perf_counter() - started, 2)
        if self.cuda:
            torch.cuda.synchronize()
            row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
            row["fits_80gb"] = row["status"] == "ok" and row["peak_reserved_gib"] < GPU_MEMORY_GIB
        else:
            row.update(peak_allocated_gib=None, peak_reserved_gib=None, fits_80gb=None)
        self.free()
        self.rows.append(row)
        print(f"[probe] {name} {op}: {row['status']}, {row.get('seconds')} s/{row.get('unit')}, "
              f"peak {row['peak_allocated_gib']} / {row['peak_reserved_gib']} GiB", file=sys.stderr, flush=True)
        self.write()
        return row

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        self.sync()
        started = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - started

    def write(self) -> None:
        if self.args.out:
            out = Path(self.args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=2))

    # ------------------------------------------------------------------ operations

    def op_train(self, name: str) -> None:
        from synthctx.train.lora import TrainSettings

        settings = TrainSettings.from_config(self.cfg["train"])
        batch = int(settings.batch_size)
        self.measure(name, "train", batch, None, lambda: self._train(name, settings, batch))

    def _train(self, name: str, settings, batch: int) -> dict[str, Any]:
        import torch

        from synthctx.train.lora import attach_lora, target_token_loss

        model, tokenizer = self.build(name, self.seed)
        # prepare_model_for_training after load_model:
        model.config.use_cache = False
        use_gc = self.cuda if settings.gradient_checkpointing == "auto" else bool(settings.gradient_checkpointing)
        if use_gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = attach_lora(model, settings, self.seed)
        model.train()
        # train_condition's optimizer and step:
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
             {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}], lr=settings.learning_rate)
        context = self.context(name)
        gen = torch.Generator().manual_seed(self.seed)
        ids = torch.randint(3, len(tokenizer), (batch, context), generator=gen)
        labels = torch.full_like(ids, -100)
        labels[:, -TRAIN_TARGET_TOKENS:] = ids[:, -TRAIN_TARGET_TOKENS:]
        ids, labels = ids.to(self.device), labels.to(self.device)
        targets = int((labels[:, 1:] != -100).sum())

        def step():
            token_loss = target_token_loss(model, ids, labels)
            (token_loss / targets).backward()
            if settings.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(token_loss.detach()) / targets

        _, warmup = self.timed(step)
        times, losses = [], []
        for _ in range(2):
            loss, seconds = self.timed(step)
            times.append(seconds)
            losses.append(loss)
        del model, optimizer
        return {"seconds": round(sum(times) / len(times), 3), "unit": "micro-batch step",
                "warmup_seconds": round(warmup, 3), "gradient_checkpointing": use_gc,
                "gradient_accumulation": int(settings.gradient_accumulation),
                "lora_parameters": sum(p.numel() for p in trainable), "loss": round(losses[-1], 3)}

    def _decode(self, fn: Callable[[list[list[int]]], list[Any]], batch: int, id_limit: int, context: int,
                new_tokens: int) -> dict[str, Any]:
        """Warm up on 2 x 128 tokens, then time one call on ``batch`` prompts of up to ``context``."""
        fn(random_prompts(min(batch, 2), min(128, context), id_limit, self.seed + 1))
        prompts = random_prompts(batch, context, id_limit, self.seed)
        outputs, seconds = self.timed(lambda: fn(prompts))
        generated = [len(getattr(o, "tokens", o)) if not hasattr(o, "generated_tokens") else o.generated_tokens
                     for o in outputs]
        if min(generated) != new_tokens:
            raise RuntimeError(f"decode generated {generated} tokens per prompt, expected {new_tokens} each")
        return {"seconds": round(seconds, 3), "unit": "call", "prompt_tokens": [len(p) for p in prompts]}

    def op_evaluate(self, name: str, model, tokenizer) -> None:
        from synthctx.evaluate.generate import greedy_decode_hf

        batch = int(self.cfg["evaluate"]["batch_size"])
        new = int(self.cfg["evaluate"]["max_new_tokens"]["mdqa"])
        self.measure(name, "evaluate", batch, new, lambda: self._decode(
            lambda prompts: greedy_decode_hf(model, tokenizer, prompts, new, batch_size=batch, stop_ids=[]),
            batch, len(tokenizer), self.context(name), new))

    def op_heads(self, name: str, model, tokenizer) -> None:
        from synthctx.heads import capture
        from synthctx.models.decoding import decode_in_groups

        heads = self.cfg["heads"]
        batch, new = int(heads["batch_size"]), int(heads["max_new_tokens"])
        pad = tokenizer.pad_token_id
        self.measure(name, "heads", batch, new, lambda: self._decode(
            lambda prompts: decode_in_groups(
                prompts, batch,
                lambda p: capture.greedy_decode(model, p, new, (), capture=True),
                lambda group: capture.greedy_decode_batch(model, group, new, (), pad, capture=True)),
            batch, len(tokenizer), self.context(name), new))

    def causal_heads(self, model, count: int) -> list[tuple[int, int]]:
        from synthctx.causal.interventions import head_geometry

        geometry = head_geometry(model)
        return spread_heads(geometry.num_layers, geometry.num_heads, count)

    def op_knockout(self, name: str, model, tokenizer) -> None:
        from synthctx.models.decoding import greedy_decode, greedy_decode_batch
        from synthctx.causal.interventions import mask_heads
        from synthctx.models.decoding import decode_in_groups

        causal = self.cfg["causal"]
        batch = int(causal["batch_size"])
        new = int(self.cfg["evaluate"]["max_new_tokens"]["mdqa"])
        heads = self.causal_heads(model, int(causal["knockout_top_k"]))
        pad = tokenizer.pad_token_id

        def decode(prompts):
            with mask_heads(model, heads, causal["knockout_operator"]):
                return decode_in_groups(prompts, batch, lambda p: greedy_decode(model, p, new, ()),
                                        lambda group: greedy_decode_batch(model, group, new, (), pad))

        row = self.measure(name, "knockout", batch, new,
                           lambda: self._decode(decode, batch, len(tokenizer), self.context(name), new))
        row["heads"] = [list(h) for h in heads]
        self.write()

    def op_patching(self, name: str, model, tokenizer) -> None:
        from synthctx.causal.patching import patched_greedy_decode, patched_greedy_decode_batch
        from synthctx.models.decoding import decode_in_groups

        causal = self.cfg["causal"]
        batch = int(causal["batch_size"])
        new = int(self.cfg["evaluate"]["max_new_tokens"]["mdqa"])
        heads = self.causal_heads(model, int(causal["patch_top_k"]))
        pad = tokenizer.pad_token_id
        holder: dict[str, Any] = {}

        def run():
            # The donor's weights count in this operation's peak (both models stay resident).
            holder["donor"], _ = self.build(name, self.seed + 1)
            donor = holder["donor"]
            return self._decode(
                lambda prompts: decode_in_groups(
                    prompts, batch,
                    lambda p: patched_greedy_decode(donor, model, p, heads, new, ()),
                    lambda group: patched_greedy_decode_batch(donor, model, group, heads, new, (), pad)),
                batch, len(tokenizer), self.context(name), new)

        row = self.measure(name, "patching", batch, new, run)
        row["heads"] = [list(h) for h in heads]
        holder.clear()
        self.write()

    def run_model(self, name: str, ops) -> None:
        if "train" in ops:
            self.op_train(name)
        inference = [op for op in ops if op != "train"]
        if not inference:
            return
        model, tokenizer = self.build(name, self.seed)
        for op in inference:
            getattr(self, f"op_{op}")(name, model, tokenizer)
        del model
        self.free()


def markdown(rows) -> str:
    def fmt(value):
        return "-" if value is None else str(value)

    lines = ["| model | op | batch | context | new tokens | peak allocated GiB | peak reserved GiB | seconds | "
             "per | fits 80 GB | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['op']} | {r['batch']} | {r['context']} | {fmt(r['new_tokens'])} | "
                     f"{fmt(r['peak_allocated_gib'])} | {fmt(r['peak_reserved_gib'])} | {fmt(r.get('seconds'))} | "
                     f"{fmt(r.get('unit'))} | {fmt(r['fits_80gb'])} | {r['status']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both")
    parser.add_argument("--context", type=int, default=None,
                        help="longest prompt / training row in tokens (default: the model's context_tokens, "
                             f"32768 in paper.yaml; {TINY_CONTEXT} with --tiny)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--out", default=None, help="JSON file of the rows (rewritten after every operation)")
    parser.add_argument("--tiny", action="store_true", help="2-layer models of the same families (smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configfile", nargs="+", default=[REPO / "config.yaml", REPO / "config" / "paper.yaml"],
                        help="configs merged in order (sizes, model settings)")
    parser.add_argument("--shapes", default=REPO / "config" / "paper-rehearsal.yaml",
                        help="config whose models.<name>-random.source holds the exact model shapes")
    args = parser.parse_args(argv)
    probe = Probe(args, load_configs(args.configfile), load_configs([args.shapes]))
    names = list(MODELS) if args.model == "both" else [args.model]
    ops = [op for op in OPS if op in args.ops]
    for name in names:
        probe.run_model(name, ops)
    probe.write()
    print(f"{probe.meta['device']}, torch {probe.meta['torch']}{', tiny models' if args.tiny else ''}")
    print(markdown(probe.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
