"""DPO training cost: TRL's DPOTrainer with its defaults vs tuneloop's DPO path, same pairs, model and seed.

    .venv/bin/python benchmarks/train.py                 # the embedded SmolLM2-135M-Instruct
    .venv/bin/python benchmarks/train.py --model tiny    # the tiny random Llama of the tests
    .venv/bin/python benchmarks/train.py --variants trl-defaults,trl-fp32,tuneloop
    python benchmarks/train.py --model DIR --device cuda --pairs 256 --batch-size 8   # on a GPU

    .venv/bin/python benchmarks/train.py --beside 1 --variants tuneloop-fixed,tuneloop   # sharing the cores

`--beside N` keeps N other processes busy while each variant trains, as the server's users keep a core busy
beside the loop's training. `tuneloop-fixed` is tuneloop's path with PyTorch's threads left at their
default (every core) instead of following the idle cores (`learn.jobs.idle_cores`); `tuneloop-unshared` is
tuneloop's path with each pair's prompt computed twice, in two padded rows, as TRL does
(`learn/shared_prefix.py` off). `--system N` gives every pair a system prompt of N words, as tenants' apps do.

Each variant runs in its own subprocess so its peak resident memory (VmHWM) is its own. Pairs/s counts
the whole job: tokenising, reference log-probs and training. `trl-fp32` is TRL's defaults without their
bf16 autocast, which is emulated, and slow, on a CPU without AVX512-BF16 or AMX.

Two losses: `final loss` is the last one each trainer logged, and tuneloop's holds the NLL of the chosen
answer (its RPO objective) beside the DPO term, so it is not TRL's quantity. `DPO loss` is the one objective
both share: -log σ(β·margin) of the final policy against its reference, over every pair, scored in fp32
after training (not counted in pairs/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _busy import busy_cores

VARIANTS = ("trl-defaults", "trl-fp32", "tuneloop", "tuneloop-fixed", "tuneloop-unshared")
DEFAULT_VARIANTS = ("trl-defaults", "tuneloop")


def make_pairs(n: int, system_words: int = 0) -> list[dict]:
    """Synthetic preference pairs: a helpful answer over a curt one, on varied topics; with `system_words`, a
    system prompt of that many words first."""
    topics = [
        "tea",
        "rivers",
        "chess",
        "bread",
        "stars",
        "bikes",
        "owls",
        "paint",
        "clocks",
        "snow",
        "maps",
        "jazz",
    ]
    rules = "Answer the customer in plain words, name the one step that solves it, and never guess at policy."
    words = (rules.split() * (system_words // len(rules.split()) + 1))[:system_words]
    system = [{"role": "system", "content": " ".join(words)}] if system_words else []
    return [
        {
            "prompt": [
                *system,
                {"role": "user", "content": f"Explain {topics[i % len(topics)]} in two sentences. ({i})"},
            ],
            "chosen": [
                {
                    "role": "assistant",
                    "content": f"Happy to help! {topics[i % len(topics)].title()} is a rich subject; "
                    "here are the two most useful facts, explained simply.",
                }
            ],
            "rejected": [{"role": "assistant", "content": "No. Look it up yourself."}],
        }
        for i in range(n)
    ]


def run_variant(
    variant: str, model_path: str, n_pairs: int, batch_size: int, seed: int, device: str, system_words: int
) -> dict:
    """Train one variant in this process; return its figures."""
    from tuneloop.monitor.process import peak_memory_mb

    rows = make_pairs(n_pairs, system_words)
    probe = FinalDPOLoss()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as tmp:
        final_loss, steps = _train(variant, model_path, rows, batch_size, seed, device, Path(tmp), probe)
    wall = time.perf_counter() - start - probe.seconds
    return {
        "variant": variant,
        "pairs": n_pairs,
        "steps": steps,
        "wall_s": round(wall, 2),
        "pairs_per_s": round(n_pairs / wall, 3),
        "peak_rss_mb": peak_memory_mb(),
        "peak_gpu_mb": _peak_gpu_mb(),
        "final_loss": final_loss,
        "dpo_loss": probe.loss,
    }


def _train(
    variant: str,
    model_path: str,
    rows: list[dict],
    batch_size: int,
    seed: int,
    device: str,
    out: Path,
    probe: FinalDPOLoss,
):
    """Run one variant's trainer; return (final logged loss, steps)."""
    from datasets import Dataset

    if variant.startswith("trl-"):
        from trl import DPOConfig, DPOTrainer

        # Only what the comparison needs: same batch, one epoch, no saving, device; the rest is TRL's.
        args = DPOConfig(
            output_dir=str(out),
            use_cpu=device == "cpu",
            per_device_train_batch_size=batch_size,
            num_train_epochs=1,
            save_strategy="no",
            logging_steps=1,  # logging only, so the final loss is comparable
            report_to="none",
            disable_tqdm=True,
            seed=seed,
            **({"bf16": False} if variant == "trl-fp32" else {}),
        )
        trainer = DPOTrainer(
            model=model_path, args=args, train_dataset=Dataset.from_list(rows), callbacks=[probe]
        )
        probe.ref_model = trainer.ref_model
        trainer.train()
        logs = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        return (logs[-1] if logs else None), trainer.state.global_step
    else:
        from tuneloop.learn.adapter_trainer import train_dpo
        from tuneloop.learn.callbacks import JobCallback
        from tuneloop.learn.job_config import JobSpec, fitted_length
        from tuneloop.learn.jobs import idle_cores

        # tuneloop's own micro-batches (as a turn's job gets them), accumulated to the same batch as TRL's.
        args = fitted_length("dpo", rows, {"num_train_epochs": 1, "save_strategy": "no"}, model_path, device)
        micro = min(args.get("per_device_train_batch_size", batch_size), batch_size)
        args |= {"per_device_train_batch_size": micro, "gradient_accumulation_steps": batch_size // micro}
        spec = JobSpec(
            kind="dpo",
            base_model=model_path,
            trainer_args=args,
            seed=seed,
            device=device,
            output_dir=out,
        )
        if variant == "tuneloop-unshared":
            import contextlib

            from tuneloop.learn import adapter_trainer

            adapter_trainer.shared_prefix_pairs = lambda model, device: contextlib.nullcontext()
        if variant == "tuneloop-fixed":
            metrics = train_dpo(spec, rows, out / "adapter", callbacks=[probe])
        else:
            with idle_cores(spec) as cores:
                metrics = train_dpo(spec, rows, out / "adapter", callbacks=[probe, JobCallback(cores=cores)])
        return metrics["final_loss"], metrics["steps"]


class FinalDPOLoss(TrainerCallback):
    """When training ends: the sigmoid DPO loss of the final policy over every training pair, in fp32, against
    `ref_model`, or against the same model with its adapter off when there is none."""

    def __init__(self) -> None:
        self.ref_model: Any = None
        self.loss: float | None = None
        self.seconds = 0.0

    def on_train_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        start = time.perf_counter()
        self.loss = dpo_loss(model, self.ref_model, train_dataloader, args.beta)
        self.seconds = time.perf_counter() - start


def dpo_loss(model: Any, ref_model: Any, batches: Any, beta: float) -> float:
    """Mean -log σ(β·((policy - ref) chosen - (policy - ref) rejected)) over TRL's collated batches."""
    import torch
    import torch.nn.functional as F
    from accelerate.utils import extract_model_from_parallel

    def completion_logps(net: Any, batch: dict) -> torch.Tensor:
        logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps = logits[:, :-1].float().log_softmax(-1)
        token_logps = logps.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
        return (token_logps * batch["completion_mask"][:, 1:]).sum(-1)

    # Drop Accelerate's autocast wrapper, so both variants are scored in fp32 whatever they trained in.
    model = extract_model_from_parallel(model, keep_fp32_wrapper=False).eval()
    ref = None if ref_model is None else extract_model_from_parallel(ref_model, keep_fp32_wrapper=False)
    losses = []
    with torch.no_grad():
        for batch in batches:
            policy = completion_logps(model, batch)
            if ref is None:
                with model.disable_adapter():
                    reference = completion_logps(model, batch)
            else:
                reference = completion_logps(ref.eval(), batch)
            chosen, rejected = (policy - reference).chunk(2)
            losses.append(-F.logsigmoid(beta * (chosen - rejected)))
    return torch.cat(losses).mean().item()


def _peak_gpu_mb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None


def resolve_model(name: str) -> str:
    """`base` (the embedded SmolLM2), `tiny`, or a model directory."""
    from tuneloop.config import Settings
    from tuneloop.model_files import ensure_base_model, make_tiny_model

    models = Path(Settings().home) / "models"
    if name == "base":
        return str(ensure_base_model(models))
    if name == "tiny":
        return str(make_tiny_model(models))
    return name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="base", help="base, tiny, or a model directory")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU when seen), cpu or cuda")
    parser.add_argument("--beside", type=int, default=0, help="other processes kept busy meanwhile")
    parser.add_argument("--system", type=int, default=0, help="words of system prompt in every pair")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from tuneloop.learn.job_config import train_device

    device = train_device(opts.device)
    if opts.worker:
        figures = run_variant(
            opts.worker, opts.model, opts.pairs, opts.batch_size, opts.seed, device, opts.system
        )
        print(json.dumps(figures))
        return

    model = resolve_model(opts.model)
    print(
        f"model={model} pairs={opts.pairs} batch={opts.batch_size} seed={opts.seed} device={device} "
        f"busy processes beside={opts.beside} system prompt words={opts.system}"
    )
    header = f"{'variant':<18}{'steps':>6}{'wall s':>9}{'pairs/s':>9}{'peak MB':>10}{'GPU MB':>8}"
    header += f"{'final loss':>12}{'DPO loss':>10}"
    print(header)
    print("-" * len(header), flush=True)
    for variant in opts.variants.split(","):  # each row as its variant finishes: a run can take an hour
        cmd = [sys.executable, __file__, "--worker", variant, "--model", model, "--pairs", str(opts.pairs)]
        cmd += ["--batch-size", str(opts.batch_size), "--seed", str(opts.seed), "--device", device]
        cmd += ["--system", str(opts.system)]
        with busy_cores(opts.beside):
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{variant} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        loss, dpo = ("n/a" if r[k] is None else f"{r[k]:.4g}" for k in ("final_loss", "dpo_loss"))
        print(
            f"{r['variant']:<18}{r['steps']:>6}{r['wall_s']:>9.1f}{r['pairs_per_s']:>9.3f}"
            f"{r['peak_rss_mb']:>10.0f}{r['peak_gpu_mb'] or '-':>8}{loss:>12}{dpo:>10}",
            flush=True,
        )


if __name__ == "__main__":
    main()
