"""Train-time batch augmenters: the training data loader calls them on every batch, evaluation never does.

An augmenter holds what its pure functions (:mod:`recbole_sracl.data.augment`) need — a seeded
``torch.Generator`` and indexes built once from the training split — and returns a NEW ``Interaction`` with
extra fields; the batch it receives is left untouched. Its generator state is saved in checkpoints so a
resumed run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_sracl.data import augment

# field names added to training batches
VIEW_SEQ = ("aug_item_seq_1", "aug_item_seq_2")
VIEW_LEN = ("aug_item_len_1", "aug_item_len_2")
SAME_TARGET_SEQ, SAME_TARGET_LEN = "same_target_item_seq", "same_target_item_len"
SUBSTITUTED_SEQ = ("substituted_item_seq_1", "substituted_item_seq_2")
TRAIN_ROW = "train_row"


class Augmenter:
    """Base class: a seeded generator, ``__call__(batch, rows) -> new batch``, and checkpointable state."""

    def __init__(self, config: Any, seed_offset: int = 0):
        self.item_seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.item_len_field = config["ITEM_LIST_LENGTH_FIELD"]
        # different streams per augmenter and per distributed rank, all derived from the run's seed
        seed = int(config["seed"]) + 7919 * (seed_offset + 1) + 104729 * int(config["local_rank"] or 0)
        self.generator = torch.Generator().manual_seed(seed)

    def fields(self, batch: Interaction, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The new fields for this batch; ``rows`` are the batch's indices into the training dataset."""
        raise NotImplementedError

    def __call__(self, batch: Interaction, rows: np.ndarray) -> Interaction:
        return Interaction({**batch.interaction, **self.fields(batch, rows)})

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class CL4SRecAugmenter(Augmenter):
    """Two crop/mask/reorder views per sequence (CL4SRec)."""

    def __init__(self, config: Any, mask_token: int):
        super().__init__(config)
        self.eta, self.gamma, self.beta = config["crop_eta"], config["mask_gamma"], config["reorder_beta"]
        self.mask_token = mask_token

    def fields(self, batch, rows):
        first, second = augment.cl4srec_views(
            batch[self.item_seq_field], batch[self.item_len_field], self.generator,
            eta=self.eta, gamma=self.gamma, beta=self.beta, mask_token=self.mask_token,
        )
        return {VIEW_SEQ[0]: first[0], VIEW_LEN[0]: first[1], VIEW_SEQ[1]: second[0], VIEW_LEN[1]: second[1]}


class SameTargetAugmenter(Augmenter):
    """A different training sequence with the same next item, drawn per batch (DuoRec's supervised positive).

    The index is built once, vectorised, from the TRAINING split only.
    """

    def __init__(self, config: Any, train_dataset: Any):
        super().__init__(config, seed_offset=1)
        features = train_dataset.inter_feat
        self.train_seq = features[self.item_seq_field]
        self.train_len = features[self.item_len_field]
        self.index = augment.same_target_index(features[config["ITEM_ID_FIELD"]])

    def fields(self, batch, rows):
        partner = augment.sample_same_target(torch.as_tensor(rows, dtype=torch.long), generator=self.generator,
                                             **self.index)
        return {SAME_TARGET_SEQ: self.train_seq[partner], SAME_TARGET_LEN: self.train_len[partner]}


class SubstitutionAugmenter(Augmenter):
    """Two SRA-CL views: items replaced by random semantic neighbours with probability ``substitution_rate``."""

    def __init__(self, config: Any, neighbours: torch.Tensor, neighbour_count: torch.Tensor):
        super().__init__(config, seed_offset=2)
        self.neighbours, self.neighbour_count = neighbours, neighbour_count
        self.rate = float(config["substitution_rate"])

    def fields(self, batch, rows):
        seq, length = batch[self.item_seq_field], batch[self.item_len_field]
        return {
            name: augment.substitute(seq, length, self.neighbours, self.neighbour_count, self.rate, self.generator)
            for name in SUBSTITUTED_SEQ
        }


class TrainRowAugmenter(Augmenter):
    """Each example's row index into the training split (SRACL's per-prefix L_CS looks its prefix up by it)."""

    def fields(self, batch, rows):
        return {TRAIN_ROW: torch.as_tensor(rows, dtype=torch.long)}


class ComposedAugmenter(Augmenter):
    """Apply several augmenters to the same source batch and merge their fields."""

    def __init__(self, augmenters: Iterable[Augmenter]):
        self.augmenters = list(augmenters)

    def fields(self, batch, rows):
        merged: dict[str, torch.Tensor] = {}
        for augmenter in self.augmenters:
            merged.update(augmenter.fields(batch, rows))
        return merged

    def state_dict(self):
        return {"parts": [augmenter.state_dict() for augmenter in self.augmenters]}

    def load_state_dict(self, state):
        for augmenter, part in zip(self.augmenters, state["parts"]):
            augmenter.load_state_dict(part)


def compose(*augmenters: Augmenter | None) -> Augmenter | None:
    """One augmenter from several (``None`` entries are skipped); ``None`` when nothing is left."""
    present = [augmenter for augmenter in augmenters if augmenter is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else ComposedAugmenter(present)
