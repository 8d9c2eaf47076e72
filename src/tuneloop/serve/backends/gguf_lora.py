"""A PEFT LoRA adapter of a Llama-style model, written as a GGUF LoRA adapter that llama.cpp loads.

Every adapter tuneloop trains is a PEFT directory; llama.cpp reads its own format, with llama.cpp's tensor
names and its rotary layout of the query and key projections (the permutation of llama.cpp's HF converter).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

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


def write_gguf_lora(adapter_dir: Path, base_config: dict, out: Path) -> None:
    """Write the PEFT LoRA adapter in `adapter_dir` (for the base model whose config.json is `base_config`)
    as a GGUF LoRA adapter at `out`; an adapter llama.cpp cannot apply raises BadRequest."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise BadRequest(f"{adapter_dir}: only plain LoRA adapters can be served by llama.cpp (not DoRA)")
    if config.get("modules_to_save"):
        raise BadRequest(f"{adapter_dir}: llama.cpp cannot serve an adapter with modules_to_save")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)  # llama.cpp scales by alpha / r; rsLoRA means alpha / sqrt(r)
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise BadRequest(f"{adapter_dir}: adapter_model.safetensors is missing")
    if base_config.get("model_type") != "llama":
        raise BadRequest(
            f"{adapter_dir}: llama.cpp serving of adapters supports Llama-style base models only"
        )
    n_head = int(base_config["num_attention_heads"])
    heads = {"q_proj": n_head, "k_proj": int(base_config.get("num_key_value_heads", n_head))}
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for key, tensor in sorted(load_file(str(weights_file)).items()):
        match = _KEY.search(key)
        if match is None or match[2] not in TENSOR_NAMES:
            raise BadRequest(f"{adapter_dir}: llama.cpp cannot serve the adapter tensor {key!r}")
        layer, module, part = match.groups()
        data = tensor.float().numpy()
        if part == "B" and module in heads:  # B's rows are the projection's outputs, A's columns its inputs
            data = _permute_rows(data, heads[module])
        writer.add_tensor(
            f"blk.{layer}.{TENSOR_NAMES[module]}.weight.lora_{part.lower()}", np.ascontiguousarray(data)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
