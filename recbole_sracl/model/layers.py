"""Pieces shared by CL4SRec, DuoRec and SRACL: InfoNCE, batched encoding, the backbone's own loss."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from recbole_sracl.errors import ConfigError, require_one_of

Tensor = torch.Tensor
NEGATIVES = ("symmetric", "batch")
SIMILARITIES = ("dot", "cos")


def info_nce(
    anchor: Tensor,
    positive: Tensor,
    temperature: float = 1.0,
    similarity: str = "dot",
    negatives: str = "symmetric",
) -> Tensor:
    """InfoNCE between row-aligned ``anchor`` and ``positive`` (``[N, d]`` each), mean over rows.

    negatives:
        ``symmetric``: SimCLR/DuoRec/CL4SRec form. Each of the 2N vectors has its partner as positive and the
        other 2N-2 vectors as negatives; the loss averages both directions.
        ``batch``: one-sided form of SRA-CL eq. (10). ``anchor[i]`` has ``positive[i]`` as positive and the
        other N-1 rows of ``positive`` as negatives.
    """
    require_one_of("similarity", similarity, SIMILARITIES, ValueError)
    require_one_of("negatives", negatives, NEGATIVES, ValueError)
    if similarity == "cos":
        anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
    count = anchor.size(0)
    if negatives == "batch":
        logits = anchor @ positive.T / temperature
        return F.cross_entropy(logits, torch.arange(count, device=anchor.device))
    both = torch.cat([anchor, positive], dim=0)
    logits = both @ both.T / temperature
    logits = logits.masked_fill(torch.eye(2 * count, dtype=torch.bool, device=both.device), float("-inf"))
    labels = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(anchor.device)
    return F.cross_entropy(logits, labels)


def encode_together(
    encode: Callable[[Tensor, Tensor], Tensor], sequences: Sequence[tuple[Tensor, Tensor]]
) -> list[Tensor]:
    """Encode several ``(item_seq, item_len)`` batches in one forward pass and split the outputs.

    Dropout masks are drawn per row, so this equals separate passes in distribution at lower overhead.
    """
    if len(sequences) == 1:
        return [encode(*sequences[0])]
    seqs = torch.cat([seq for seq, _ in sequences], dim=0)
    lens = torch.cat([length for _, length in sequences], dim=0)
    return list(torch.split(encode(seqs, lens), [seq.size(0) for seq, _ in sequences], dim=0))


def recommendation_loss(model, interaction, seq_output: Tensor) -> tuple[Tensor, ...]:
    """The backbone's own training loss computed from an already encoded batch.

    Our models (CL4SRec, DuoRec) define ``loss_from_output`` (next-item loss plus their own contrastive
    terms); for RecBole's models the formula is the one of their ``calculate_loss`` (CE over all items,
    or BPR against the sampled negative).
    """
    own = getattr(model, "loss_from_output", None)
    if own is not None:
        return own(interaction, seq_output)
    positives = interaction[model.POS_ITEM_ID]
    if model.loss_type == "BPR":
        negatives = interaction[model.NEG_ITEM_ID]
        pos_score = (seq_output * model.item_embedding(positives)).sum(-1)
        neg_score = (seq_output * model.item_embedding(negatives)).sum(-1)
        return (model.loss_fct(pos_score, neg_score),)
    logits = seq_output @ model.item_embedding.weight.T
    return (model.loss_fct(logits, positives),)


def require(condition: bool, message: str) -> None:
    """Raise a :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_choice(config, model: str, key: str, choices: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` naming ``key`` and its allowed values unless ``config[key]`` is one of them."""
    require_one_of(f"{model}: {key}", config[key], choices)


def check_contrastive_config(config, model: str, weights: Sequence[str]) -> None:
    """Validate the keys every contrastive model shares: loss weights, temperature, similarity."""
    for key in weights:
        value = config[key]
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
            f"{model}: {key} must be a number >= 0, got {value!r}",
        )
    tau = config["tau"]
    require(isinstance(tau, (int, float)) and tau > 0, f"{model}: tau must be a number > 0, got {tau!r}")
    require_choice(config, model, "sim", SIMILARITIES)
    require(
        config["loss_type"] == "CE",
        f"{model}: loss_type must be CE (cross-entropy over all items, as in the paper), got {config['loss_type']!r}",
    )
