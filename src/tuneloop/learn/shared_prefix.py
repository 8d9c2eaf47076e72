"""DPO pairs run their shared prompt once: one packed row [prefix, chosen's rest, rejected's rest] per pair.

TRL batches a pair as two padded rows, [prompt + chosen] and [prompt + rejected], so the prompt is computed
twice and the shorter answer is padded to the longer. In a causal model the tokens two rows share at the
start have the same hidden states in both, so the packed row computes them once; the rejected answer sees
the prefix but not the chosen answer (a block in the attention mask) and takes the positions it would have
had in its own row. The hidden states are then laid back out as TRL's rows, so its loss, log-probs and
gradients are the same up to float rounding, for fewer tokens (a long system prompt once, not twice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch

# Attention implementations that read a custom 4D mask as given (`create_causal_mask` returns it as-is).
PACKABLE_ATTENTION = ("sdpa", "eager")


class PackedPairs(NamedTuple):
    input_ids: torch.Tensor  # [pairs, longest packed row]
    attention_mask: torch.Tensor  # [pairs, 1, row, row]: bool for SDPA, additive float for eager
    position_ids: torch.Tensor  # [pairs, row]: each answer's positions in its own unpacked row
    gather: torch.Tensor  # [2 * pairs * width]: where each unpacked position's hidden state sits, flattened


def pack_pairs(input_ids: torch.Tensor, attention_mask: torch.Tensor, additive: bool = False) -> PackedPairs:
    """Pack TRL's right-padded [chosen rows; rejected rows] batch into one row per pair."""
    import torch

    pairs, width = input_ids.shape[0] // 2, input_ids.shape[1]
    lengths = attention_mask.sum(dim=1).tolist()
    rows: list[tuple[torch.Tensor, int, int, int]] = []  # (tokens, shared, chosen length, rejected length)
    for i in range(pairs):
        chosen, rejected = input_ids[i, : lengths[i]], input_ids[pairs + i, : lengths[pairs + i]]
        shortest = min(len(chosen), len(rejected))
        differ = (chosen[:shortest] != rejected[:shortest]).nonzero()
        shared = int(differ[0]) if len(differ) else shortest
        rows.append((torch.cat([chosen, rejected[shared:]]), shared, len(chosen), len(rejected)))
    longest = max(len(tokens) for tokens, *_ in rows)
    ids = torch.zeros(pairs, longest, dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros(pairs, longest, dtype=torch.long, device=input_ids.device)
    allowed = torch.tril(torch.ones(longest, longest, dtype=torch.bool, device=input_ids.device))
    allowed = allowed.repeat(pairs, 1, 1)
    nowhere = pairs * longest  # one zero row appended to the packed states: padding maps there
    gather = torch.full((2, pairs, width), nowhere, dtype=torch.long, device=input_ids.device)
    for i, (tokens, shared, n_chosen, n_rejected) in enumerate(rows):
        rest = n_rejected - shared
        ids[i, : len(tokens)] = tokens
        positions[i, :n_chosen] = torch.arange(n_chosen)
        positions[i, n_chosen : len(tokens)] = torch.arange(shared, n_rejected)
        allowed[i, n_chosen : len(tokens), shared:n_chosen] = False  # the rejected rest never sees the chosen
        base = i * longest
        gather[0, i, :n_chosen] = base + torch.arange(n_chosen)
        gather[1, i, :shared] = base + torch.arange(shared)
        gather[1, i, shared:n_rejected] = base + n_chosen + torch.arange(rest)
    mask = allowed[:, None]
    if additive:
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    return PackedPairs(ids, mask, positions, gather.reshape(-1))


def unpack_states(hidden: torch.Tensor, packed: PackedPairs, rows: int, width: int) -> torch.Tensor:
    """The packed rows' hidden states laid out as TRL's `rows` x `width` batch; padding gets zeros."""
    import torch

    flat = hidden.reshape(-1, hidden.shape[-1])
    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[-1])])
    return flat[packed.gather].reshape(rows, width, -1)


def _is_pair_batch(kwargs: dict[str, Any]) -> bool:
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    return (
        ids is not None
        and ids.dim() == 2
        and ids.shape[0] % 2 == 0
        and mask is not None
        and mask.dim() == 2
        and kwargs.get("position_ids") is None
        and kwargs.get("inputs_embeds") is None
        and kwargs.get("past_key_values") is None
        and bool((mask[:, 1:] <= mask[:, :-1]).all())  # right-padded: TRL's preference collator
    )


@contextlib.contextmanager
def shared_prefix_pairs(model: Any, device: str = "cpu") -> Iterator[None]:
    """While inside, the backbone of `model` packs every right-padded [chosen; rejected] batch it is given
    (DPO's reference log-probs and steps, the reward model's steps); other calls run as before. On a GPU,
    and with other attention kernels, nothing changes: there TRL's own paths run. Enter before PEFT wraps
    the model (PEFT keeps the backbone module)."""
    backbone = model.base_model
    implementation = model.config._attn_implementation
    if device != "cpu" or implementation not in PACKABLE_ATTENTION:
        yield
        return
    original = backbone.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and "input_ids" not in kwargs:  # sequence classifiers pass input_ids by position
            kwargs, args = {"input_ids": args[0], **kwargs}, ()
        if args or not _is_pair_batch(kwargs):
            return original(*args, **kwargs)
        ids = kwargs["input_ids"]
        packed = pack_pairs(ids, kwargs["attention_mask"], additive=implementation == "eager")
        outputs = original(
            **{
                **kwargs,
                "input_ids": packed.input_ids,
                "attention_mask": packed.attention_mask,
                "position_ids": packed.position_ids,
            }
        )
        outputs.last_hidden_state = unpack_states(outputs.last_hidden_state, packed, *ids.shape)
        return outputs

    backbone.forward = forward
    try:
        yield
    finally:
        del backbone.forward  # the class's forward again
