"""PEFT LoRA adapters of a Llama-style model, written as GGUF LoRA adapters that llama.cpp loads.

Every adapter tuneloop trains is a PEFT directory; llama.cpp reads its own format, with llama.cpp's tensor
names and its rotary layout of the query and key projections (the permutation of llama.cpp's HF converter).
Several adapters go into one bank (one slot each) so rows on different adapters decode in one call.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from tuneloop.errors import BadRequest

# PEFT's module names in a Llama block -> llama.cpp's tensor names (llama-arch.cpp).
TENSOR_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def _permute_rows(weights, n_head: int):
    """llama.cpp orders each head's rotary dimensions in interleaved pairs, Hugging Face in two halves."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def lora_tensors(adapter_dir: Path, base_config: dict) -> dict[str, Any]:
    """The PEFT LoRA adapter in `adapter_dir` (for the base model whose config.json is `base_config`) as
    llama.cpp's tensors by name, float32, its scale (alpha / r) folded into B; BadRequest for an adapter
    llama.cpp cannot apply."""
    import numpy as np
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise BadRequest(f"{adapter_dir}: only plain LoRA adapters can be served by llama.cpp (not DoRA)")
    if config.get("modules_to_save"):
        raise BadRequest(f"{adapter_dir}: llama.cpp cannot serve an adapter with modules_to_save")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise BadRequest(f"{adapter_dir}: adapter_model.safetensors is missing")
    if base_config.get("model_type") != "llama":
        raise BadRequest(
            f"{adapter_dir}: llama.cpp serving of adapters supports Llama-style base models only"
        )
    n_head = int(base_config["num_attention_heads"])
    heads = {"q_proj": n_head, "k_proj": int(base_config.get("num_key_value_heads", n_head))}
    shapes = _projection_shapes(base_config)
    tensors = {}
    ranks: dict[tuple[str, str], set[int]] = {}
    for key, tensor in sorted(load_file(str(weights_file)).items()):
        match = _KEY.search(key)
        if match is None or match[2] not in TENSOR_NAMES:
            raise BadRequest(f"{adapter_dir}: llama.cpp cannot serve the adapter tensor {key!r}")
        layer, module, part = match.groups()
        out_dim, in_dim = shapes[module]
        r = tensor.shape[0] if part == "A" else tensor.shape[-1]
        expected = (r, in_dim) if part == "A" else (out_dim, r)
        if int(layer) >= int(base_config["num_hidden_layers"]) or tuple(tensor.shape) != expected:
            raise BadRequest(
                f"{adapter_dir}: the adapter tensor {key!r} of shape {tuple(tensor.shape)} does not fit the "
                "base model (is the adapter for another model?)"
            )
        ranks.setdefault((layer, module), set()).add(r)
        data = tensor.float().numpy()
        if part == "B":  # B's rows are the projection's outputs, A's columns its inputs
            data = data * np.float32(scale)
            if module in heads:
                data = _permute_rows(data, heads[module])
        tensors[f"blk.{layer}.{TENSOR_NAMES[module]}.weight.lora_{part.lower()}"] = data
    for (layer, module), found in ranks.items():
        pair = [f"blk.{layer}.{TENSOR_NAMES[module]}.weight.lora_{part}" for part in "ab"]
        if len(found) != 1 or not all(name in tensors for name in pair):
            raise BadRequest(
                f"{adapter_dir}: layer {layer}'s {module} needs one A and one B of the same rank"
            )
    return tensors


def _projection_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(outputs, inputs) of each projection a Llama block's LoRA may adapt, from the base model's config."""
    hidden, ffn = int(config["hidden_size"]), int(config["intermediate_size"])
    n_head = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    q, kv = n_head * head_dim, int(config.get("num_key_value_heads", n_head)) * head_dim
    return {
        "q_proj": (q, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, q),
        "gate_proj": (ffn, hidden),
        "up_proj": (ffn, hidden),
        "down_proj": (hidden, ffn),
    }


def bank_of(adapters: list[dict[str, Any]]) -> dict[str, Any]:
    """One adapter bank of `adapters` (lora_tensors' dicts): slot 0 all zeros (rows on the base model),
    then one slot per adapter in order; ranks padded with zeros to the largest, and a projection an adapter
    leaves alone is zero in its slot. Each slot's B is stored transposed (rank rows of the outputs), as the
    patched build's bank kernel reads it; that build routes each sequence to its slot."""
    import numpy as np

    rank = max(t.shape[0] for tensors in adapters for n, t in tensors.items() if n.endswith("lora_a"))
    shapes: dict[str, tuple[int, int]] = {}
    for tensors in adapters:
        for name, t in tensors.items():
            shapes[name] = (rank, t.shape[1]) if name.endswith("lora_a") else (rank, t.shape[0])
    bank = {}
    for name, (rows, cols) in shapes.items():
        stacked = np.zeros((len(adapters) + 1, rows, cols), dtype=np.float32)
        for slot, tensors in enumerate(adapters, start=1):
            if (t := tensors.get(name)) is not None:
                t = t if name.endswith("lora_a") else t.T
                stacked[slot, : t.shape[0], : t.shape[1]] = t
        bank[name] = stacked
    return bank


def write_gguf_lora(tensors: dict[str, Any], out: Path) -> None:
    """Write `tensors` (lora_tensors' or bank_of's, scale folded into B) as a GGUF LoRA adapter at `out`."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(out, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # no alpha: llama.cpp applies B as it is
    for name, data in sorted(tensors.items()):
        writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
