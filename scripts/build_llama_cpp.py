"""Build the pinned llama-cpp-python wheel from its PyPI sdist, with two changes to its vendored llama.cpp.

1. llama.cpp (as vendored by 0.3.16) reuses the previous decode's compute graph for a batch of the same
   shape without looking at which LoRA adapters are set, so after a switch a decode runs the old adapter's
   weights (or a freed one's). The fix drops the previous graph whenever the adapter set changes, as later
   llama.cpp releases do; the backend then keeps graph reuse on, worth about 10 % of one user's decoding.
2. llama.cpp applies an adapter to a whole batch, so rows on different adapters took a decode call each.
   An adapter bank is one GGUF LoRA adapter whose tensors hold a slot per adapter (a third dimension, each
   slot's B transposed); `llama_adapter_lora_bank_route` says which slot each sequence uses. A kernel added
   to ggml's CPU backend (`ggml_cpu_lora_bank`, run as a custom op) adds each row's products through its
   slot to the base product, B as rank axpys along the outputs. Rows use one adapter or eight in one call,
   with the same numbers.

The wheel's version carries a local label (`+tuneloop3`) so the backend can tell this build from another.

Run by `make setup`: `python scripts/build_llama_cpp.py WHEEL_DIR` (CMAKE_ARGS from the environment).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = "tuneloop3"  # serve/backends/llamacpp.py looks for it
SRC = "vendor/llama.cpp/src/"
GGML = "vendor/llama.cpp/ggml/"
BANKS_PER_CALL = 4  # serve/backends/llamacpp.py splits a step's rows so no call sets more
RESET = "\n    gf_res_prev->reset();  // tuneloop: a graph built for other adapters must not be reused\n"
ROUTE_API = """
    // tuneloop: an adapter bank's slot for each sequence id (slot_of_seq[seq]); a sequence past n_seq, or a
    // slot out of range, uses slot 0. A bank is applied as it is: its alpha and its set scale are ignored.
    LLAMA_API void llama_adapter_lora_bank_route(
            struct llama_adapter_lora * adapter, const int32_t * slot_of_seq, int32_t n_seq);
"""
ROUTE_FIELD = "\n    std::vector<int32_t> bank_route; // tuneloop: sequence id -> adapter bank slot\n"
ROUTE = """
void llama_adapter_lora_bank_route(llama_adapter_lora * adapter, const int32_t * slot_of_seq, int32_t n_seq) {
    // the fewest slots of any tensor: a hand-made file whose tensors disagree must not route past one
    int64_t n_slots = -1;
    for (const auto & it : adapter->ab_map) {
        const int64_t n = std::min(it.second.a->ne[2], it.second.b->ne[2]);
        n_slots = n_slots < 0 ? n : std::min(n_slots, n);
    }
    adapter->bank_route.assign(n_seq > 0 ? n_seq : 0, 0);
    for (int32_t s = 0; s < n_seq; ++s) {
        const int32_t slot = slot_of_seq[s];
        adapter->bank_route[s] = slot >= 0 && slot < n_slots ? slot : 0;
    }
}
"""
BANK_INPUT = """
// tuneloop: the slot of an adapter bank each token's sequence uses
class llm_graph_input_lora_bank : public llm_graph_input_i {
public:
    llm_graph_input_lora_bank(const llama_adapter_lora * bank, bool base_only)
        : bank(bank), base_only(base_only) {}
    virtual ~llm_graph_input_lora_bank() = default;

    void set_input(const llama_ubatch * ubatch) override;

    bool can_reuse(const llm_graph_params & params) override;

    static int32_t slot_of(const llama_adapter_lora * bank, llama_seq_id seq);
    // whether every token of `ubatch` is on slot 0 (the base model)
    static bool on_base(const llama_adapter_lora * bank, const llama_ubatch & ubatch);

    const llama_adapter_lora * bank;
    const bool base_only; // the graph leaves the bank out
    ggml_tensor * ids = nullptr; // I32 [1, n_tokens], or [1, n_outputs] after the last layer drops the rest
};
"""
BANK_IDS = """
    // tuneloop: an adapter bank's routing input for so many rows, made by the first product that needs it
    mutable std::map<std::pair<const llama_adapter_lora *, int64_t>, llm_graph_input_lora_bank *>
        lora_bank_inputs;
"""
BANK_INPUT_IMPL = """
int32_t llm_graph_input_lora_bank::slot_of(const llama_adapter_lora * bank, llama_seq_id seq) {
    return seq >= 0 && (size_t) seq < bank->bank_route.size() ? bank->bank_route[seq] : 0;
}

// a worst-case reserve's ubatch has no sequences: its graph is sized for rows on the bank
static bool lora_bank_reserve(const llama_ubatch & ubatch) {
    return ubatch.seq_id == nullptr || (ubatch.n_tokens > 0 && ubatch.seq_id[0] == nullptr);
}

bool llm_graph_input_lora_bank::on_base(const llama_adapter_lora * bank, const llama_ubatch & ubatch) {
    if (lora_bank_reserve(ubatch)) {
        return false;
    }
    for (uint32_t i = 0; i < ubatch.n_tokens; ++i) {
        if (slot_of(bank, ubatch.seq_id[i][0]) != 0) {
            return false;
        }
    }
    return true;
}

void llm_graph_input_lora_bank::set_input(const llama_ubatch * ubatch) {
    if (ids == nullptr || lora_bank_reserve(*ubatch)) {
        return;
    }
    // fewer rows than tokens: the output tokens' rows, in order (as llm_graph_input_out_ids picks them)
    const bool all = ids->ne[1] == (int64_t) ubatch->n_tokens;
    std::vector<int32_t> data(ids->ne[1], 0);
    int64_t n = 0;
    for (uint32_t i = 0; i < ubatch->n_tokens && n < ids->ne[1]; ++i) {
        if (!all && !ubatch->output[i]) {
            continue;
        }
        data[n++] = slot_of(bank, ubatch->seq_id[i][0]);
    }
    ggml_backend_tensor_set(ids, data.data(), 0, data.size()*ggml_element_size(ids));
}

bool llm_graph_input_lora_bank::can_reuse(const llm_graph_params & params) {
    if (on_base(bank, params.ubatch) != base_only) {
        return false;
    }
    const int64_t rows = ids == nullptr ? -1 : ids->ne[1];
    return rows < 0 || rows == (int64_t) params.ubatch.n_tokens || rows == (int64_t) params.n_outputs;
}
"""
BANK_PRODUCT = """
        if (lw->a->ne[2] > 1) { // tuneloop: an adapter bank, each row through its sequence's slot
            GGML_ASSERT(cur->ne[2] == 1 && cur->ne[3] == 1);
            GGML_ASSERT(cur->ne[1] == (int64_t) ubatch.n_tokens || cur->ne[1] == (int64_t) n_outputs);
            llm_graph_input_lora_bank *& inp = lora_bank_inputs[{lora.first, cur->ne[1]}];
            if (inp == nullptr) {
                const bool base_only = llm_graph_input_lora_bank::on_base(lora.first, ubatch);
                auto made = std::make_unique<llm_graph_input_lora_bank>(lora.first, base_only);
                if (!base_only) {
                    made->ids = ggml_new_tensor_2d(ctx0, GGML_TYPE_I32, 1, cur->ne[1]);
                    ggml_set_input(made->ids);
                }
                inp = made.get();
                this->res->add_input(std::move(made));
            }
            if (inp->base_only) {
                continue;
            }
            // Every row through the same per-row products, so a row's numbers never depend on what else
            // the call holds; both products and the add in one op (the bank kernel): one barrier, not four
            ggml_tensor * args[5] = {res, ggml_is_contiguous(cur) ? cur : ggml_cont(ctx0, cur), lw->a, lw->b,
                                     inp->ids};
            res = ggml_custom_4d(ctx0, GGML_TYPE_F32, res->ne[0], res->ne[1], 1, 1, args, 5,
                                 ggml_cpu_lora_bank, GGML_N_TASKS_MAX, nullptr);
            continue;
        }
"""
LORA_LOOP = """    ggml_tensor * res = ggml_mul_mat(ctx0, w, cur);

    for (const auto & lora : *loras) {
        llama_adapter_lora_weight * lw = lora.first->get_weight(w);
        if (lw == nullptr) {
            continue;
        }
"""
BANK_API = """
    // tuneloop: an adapter bank's products added to the base model's (llama.cpp's custom op)
    GGML_BACKEND_API void ggml_cpu_lora_bank(struct ggml_tensor * dst, int ith, int nth, void * userdata);
"""
BANK_KERNEL = """
// tuneloop: dst[:, t] = res[:, t] + bt[:, :, s]*(a[:, :, s]^T x[:, t]) with s = ids[t], for
// dst->src = {res, x, a, bt, ids} (slot 0 of a bank holds zeros). A bank keeps each slot's B transposed, so
// the second product is rank axpys along the outputs: as dot products its rows would be rank long, too
// short for vec_dot's SIMD loop. Each piece of a row computes the row's first product itself, so the op
// needs no barrier of its own; a row splits into at most as many pieces as there are threads.
void ggml_cpu_lora_bank(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    GGML_UNUSED(userdata);
    const struct ggml_tensor * res = dst->src[0];
    const struct ggml_tensor * x = dst->src[1];
    const struct ggml_tensor * a = dst->src[2];
    const struct ggml_tensor * bt = dst->src[3];
    const struct ggml_tensor * ids = dst->src[4];
    GGML_ASSERT(res->type == GGML_TYPE_F32 && x->type == GGML_TYPE_F32 && a->type == GGML_TYPE_F32);
    GGML_ASSERT(bt->type == GGML_TYPE_F32 && ids->type == GGML_TYPE_I32);
    GGML_ASSERT(x->nb[0] == sizeof(float) && a->nb[0] == sizeof(float) && bt->nb[0] == sizeof(float));
    GGML_ASSERT(a->ne[0] == x->ne[0] && a->ne[1] == bt->ne[1] && a->ne[2] == bt->ne[2]);
    GGML_ASSERT(bt->ne[0] == dst->ne[0] && x->ne[1] == dst->ne[1] && ids->ne[1] == dst->ne[1]);
    const int64_t n_out = dst->ne[0];
    const int64_t n_rows = dst->ne[1];
    const int64_t rank = a->ne[1];
    // a row in pieces of whole 64-float blocks (vec_mad's SIMD loop sums every output but a row's last few,
    // whatever the split), enough of them that one decoding row still gives every thread work
    const int64_t n_blocks = (n_out + 63)/64;
    const int64_t per_row = MAX(1, MIN(n_blocks, (nth + n_rows - 1)/n_rows));
    for (int64_t item = ith; item < n_rows*per_row; item += nth) {
        const int64_t t = item/per_row;
        const int64_t part = item % per_row;
        const int64_t o0 = part*n_blocks/per_row*64;
        const int64_t len = MIN(n_out, (part + 1)*n_blocks/per_row*64) - o0;
        float * out = (float *) ((char *) dst->data + t*dst->nb[1]) + o0;
        memcpy(out, (const char *) res->data + t*res->nb[1] + o0*sizeof(float), len*sizeof(float));
        const int32_t slot = *(const int32_t *) ((const char *) ids->data + t*ids->nb[1]);
        GGML_ASSERT(slot >= 0 && slot < a->ne[2]);
        if (slot == 0) {
            continue;
        }
        const float * xt = (const float *) ((const char *) x->data + t*x->nb[1]);
        for (int64_t k0 = 0; k0 < rank; k0 += 64) {
            float h[64];
            const int64_t kn = MIN(64, rank - k0);
            for (int64_t k = 0; k < kn; ++k) {
                const char * row = (const char *) a->data + (k0 + k)*a->nb[1] + slot*a->nb[2];
                ggml_vec_dot_f32((int) x->ne[0], &h[k], 0, (const float *) row, 0, xt, 0, 1);
            }
            for (int64_t k = 0; k < kn; ++k) {
                const char * row = (const char *) bt->data + (k0 + k)*bt->nb[1] + slot*bt->nb[2];
                ggml_vec_mad_f32((int) len, out, (const float *) row + o0, h[k]);
            }
        }
    }
}
"""
PLAIN_SHAPE = """        } else {
            if (model_tensor->ne[0] != w.a->ne[0] || model_tensor->ne[1] != w.b->ne[1]) {
"""
BANK_SHAPE = """        } else if (model_tensor->ne[2] == 1 && (w.a->ne[2] > 1 || w.b->ne[2] > 1)) {
            // tuneloop: an adapter bank, float32, each slot's B transposed (rank rows of the outputs)
            if (w.a->type != GGML_TYPE_F32 || w.b->type != GGML_TYPE_F32 ||
                    model_tensor->ne[0] != w.a->ne[0] || model_tensor->ne[1] != w.b->ne[0] ||
                    w.a->ne[1] != w.b->ne[1] || w.a->ne[2] != w.b->ne[2] ||
                    w.a->ne[3] != 1 || w.b->ne[3] != 1) {
                throw std::runtime_error("adapter bank tensor '" + name + "' has incorrect shape or type");
            }
"""
EMBD_BANK = """            if (w.a->ne[2] > 1 || w.b->ne[2] > 1) { // tuneloop: banks adapt projections only
                throw std::runtime_error("tensor '" + name + "': a bank cannot adapt embeddings");
            }
"""
MAX_NODES = "    return std::max<uint32_t>(1024u, 8u*model.n_tensors());\n"
# llama.cpp sizes a context's graph when the context is made, before any adapter is set: room for the
# objects of BANKS_PER_CALL banks' products (at most 6 a weight) besides the model's own
MORE_NODES = f"""    // tuneloop: and room for {BANKS_PER_CALL} adapter banks' products
    return std::max<uint32_t>(1024u, 8u*model.n_tensors()) + {6 * BANKS_PER_CALL}u*model.n_tensors();
"""


def after(anchor: str, addition: str) -> tuple[str, str]:
    """`anchor` (which must occur exactly once) kept, `addition` inserted after it."""
    return anchor, anchor + addition


# (file under the sdist, text that must occur exactly once, what replaces it); None: append to the file
FIXES = [
    (SRC + "llama-context.cpp", *after("    loras[adapter] = scale;\n", RESET)),
    (SRC + "llama-context.cpp", *after("        loras.erase(pos);\n", RESET.replace("\n    ", "\n        "))),
    (SRC + "llama-context.cpp", *after("    loras.clear();\n", RESET)),
    (SRC + "llama-context.cpp", MAX_NODES, MORE_NODES),
    ("vendor/llama.cpp/include/llama.h", *after("lora_free(struct llama_adapter_lora * adapter);\n",
                                                ROUTE_API)),
    (SRC + "llama-adapter.h", *after("    float alpha;\n", ROUTE_FIELD)),
    (SRC + "llama-adapter.cpp", None, ROUTE),
    (SRC + "llama-graph.h", *after("#include <set>\n", "#include <map>\n")),
    (SRC + "llama-graph.h", *after("using llm_graph_input_ptr = std::unique_ptr<llm_graph_input_i>;\n",
                                   BANK_INPUT)),
    (SRC + "llama-graph.h", *after("    llm_graph_result * res;\n\n    ggml_context * ctx0 = nullptr;\n",
                                   BANK_IDS)),
    (SRC + "llama-graph.cpp", None, BANK_INPUT_IMPL),
    (SRC + "llama-graph.cpp", *after(LORA_LOOP, BANK_PRODUCT)),
    (SRC + "llama-adapter.cpp", PLAIN_SHAPE, BANK_SHAPE + PLAIN_SHAPE),
    (SRC + "llama-adapter.cpp", *after("        if (is_token_embd) {\n", EMBD_BANK)),
    (SRC + "llama-graph.cpp", *after('#include "llama-impl.h"\n', '#include "ggml-cpu.h"\n')),
    (GGML + "include/ggml-cpu.h", *after("    GGML_BACKEND_API void ggml_cpu_init(void);\n", BANK_API)),
    (GGML + "src/ggml-cpu/ggml-cpu.c", None, BANK_KERNEL),
]  # fmt: skip


def pinned_version() -> str:
    """The llama-cpp-python version constraints.txt pins."""
    text = (ROOT / "constraints.txt").read_text()
    match = re.search(r"^llama[-_.]cpp[-_.]python==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    if match is None:
        sys.exit("constraints.txt pins no llama-cpp-python version")
    return match.group(1)


def apply_fixes(source: Path, version: str) -> None:
    """Apply FIXES and label the version; fail where the source drifted from what they expect."""
    for name, old, new in FIXES:
        path = source / name
        text = path.read_text()
        if old is None:
            path.write_text(text + new)
            continue
        if text.count(old) != 1:
            sys.exit(f"{name}: expected {old.strip()!r} once; is the pin still {version}?")
        path.write_text(text.replace(old, new))
    init = source / "llama_cpp" / "__init__.py"
    line = f'__version__ = "{version}"'
    if line not in init.read_text():
        sys.exit(f"llama_cpp/__init__.py does not say {line}")
    init.write_text(init.read_text().replace(line, f'__version__ = "{version}+{LABEL}"'))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: build_llama_cpp.py WHEEL_DIR")
    wheels, version = Path(sys.argv[1]), pinned_version()
    pip = [sys.executable, "-m", "pip", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [*pip, "download", "--no-deps", "--no-binary", ":all:", "-d", str(work),
             f"llama-cpp-python=={version}"],
            check=True,
        )  # fmt: skip
        (archive,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(archive) as tar:
            # The "data" filter refuses links and paths out of `work`; Pythons before 3.11.4 lack it.
            tar.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        source = work / f"llama_cpp_python-{version}"
        apply_fixes(source, version)
        subprocess.run(
            [*pip, "wheel", "--no-cache-dir", "--no-deps", "-w", str(wheels), str(source)], check=True
        )


if __name__ == "__main__":
    main()
