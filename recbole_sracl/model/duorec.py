"""DuoRec (Qiu et al., "Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation", WSDM 2022).

SASRec trained with cross-entropy plus contrastive terms built from two positives per sequence:
an unsupervised one (the same sequence through a second dropout mask) and a supervised one (another
TRAINING sequence with the same next item, drawn per batch from an index built once). ``contrast``:

- ``un``: ``lmd`` * InfoNCE(h, dropout view)
- ``su``: ``lmd_sem`` * InfoNCE(h, same-target sequence)
- ``us``: both of the above
- ``us_x`` (paper default): ``lmd_sem`` * InfoNCE(dropout view, same-target sequence)

InfoNCE uses the other 2N-2 vectors in the batch as negatives, temperature ``tau``, similarity ``sim``.
"""

from __future__ import annotations

from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_sracl.data.augmenters import SAME_TARGET_LEN, SAME_TARGET_SEQ, SameTargetAugmenter
from recbole_sracl.model.layers import check_contrastive_config, encode_together, info_nce, require_choice

CONTRASTS = ("un", "su", "us", "us_x")


class DuoRec(SASRec):
    """SASRec + dropout and same-target contrastive learning."""

    @classmethod
    def validate_config(cls, config) -> None:
        check_contrastive_config(config, "DuoRec", ["lmd", "lmd_sem"])
        require_choice(config, "DuoRec", "contrast", CONTRASTS)

    @classmethod
    def build_train_augmenter(cls, config, train_dataset):
        if config["contrast"] == "un":
            return None
        return SameTargetAugmenter(config, train_dataset)

    def __init__(self, config, dataset):
        self.validate_config(config)
        super().__init__(config, dataset)
        self.contrast, self.tau, self.sim = config["contrast"], config["tau"], config["sim"]
        self.lmd, self.lmd_sem = config["lmd"], config["lmd_sem"]

    def _nce(self, first, second):
        return info_nce(first, second, self.tau, self.sim, "symmetric")

    def loss_from_output(self, interaction, seq_output):
        """Cross-entropy from ``seq_output`` plus the contrastive terms selected by ``contrast``."""
        logits = seq_output @ self.item_embedding.weight.T
        losses = [self.loss_fct(logits, interaction[self.POS_ITEM_ID])]
        item_seq, item_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        same_target = None if self.contrast == "un" else (interaction[SAME_TARGET_SEQ], interaction[SAME_TARGET_LEN])
        if self.contrast == "us_x":
            dropout_view, supervised = encode_together(self.forward, [(item_seq, item_len), same_target])
            losses.append(self.lmd_sem * self._nce(dropout_view, supervised))
            return tuple(losses)
        if self.contrast in ("un", "us"):
            losses.append(self.lmd * self._nce(seq_output, self.forward(item_seq, item_len)))
        if self.contrast in ("su", "us"):
            losses.append(self.lmd_sem * self._nce(seq_output, self.forward(*same_target)))
        return tuple(losses)

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.loss_from_output(interaction, seq_output)
