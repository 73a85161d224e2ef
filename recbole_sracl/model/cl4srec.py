"""CL4SRec (Xie et al., "Contrastive Learning for Sequential Recommendation", ICDE 2022).

SASRec trained with cross-entropy plus ``lmd`` * InfoNCE between two views of each sequence, each view made
by two different operators among crop (eta), mask (gamma) and reorder (beta); the other 2N-2 views in the
batch are negatives. The [mask] token has its own embedding row (id ``n_items``), never ranked.
"""

from __future__ import annotations

from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn

from recbole_sracl.data.augmenters import VIEW_LEN, VIEW_SEQ, CL4SRecAugmenter
from recbole_sracl.model.layers import check_contrastive_config, encode_together, info_nce, require


class CL4SRec(SASRec):
    """SASRec + crop/mask/reorder contrastive learning."""

    @classmethod
    def validate_config(cls, config) -> None:
        check_contrastive_config(config, "CL4SRec", ["lmd"])
        for key in ("crop_eta", "mask_gamma", "reorder_beta"):
            value = config[key]
            require(isinstance(value, (int, float)) and 0 <= value <= 1,
                    f"CL4SRec: {key} must be between 0 and 1, got {value!r}")

    @classmethod
    def build_train_augmenter(cls, config, train_dataset):
        return CL4SRecAugmenter(config, mask_token=train_dataset.num(config["ITEM_ID_FIELD"]))

    def __init__(self, config, dataset):
        self.validate_config(config)
        super().__init__(config, dataset)
        self.lmd, self.tau, self.sim = config["lmd"], config["tau"], config["sim"]
        # one extra row for the [mask] token used by the mask operator
        self.item_embedding = nn.Embedding(self.n_items + 1, self.hidden_size, padding_idx=0)
        self.item_embedding.apply(self._init_weights)

    def item_weights(self):
        """Embeddings of the rankable items (the [mask] row excluded)."""
        return self.item_embedding.weight[: self.n_items]

    def loss_from_output(self, interaction, seq_output):
        """Cross-entropy from ``seq_output`` plus the weighted contrastive loss between the two views."""
        logits = seq_output @ self.item_weights().T
        rec_loss = self.loss_fct(logits, interaction[self.POS_ITEM_ID])
        if self.lmd == 0:
            return (rec_loss,)
        first, second = encode_together(
            self.forward,
            [(interaction[VIEW_SEQ[0]], interaction[VIEW_LEN[0]]), (interaction[VIEW_SEQ[1]], interaction[VIEW_LEN[1]])],
        )
        return rec_loss, self.lmd * info_nce(first, second, self.tau, self.sim, "symmetric")

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.loss_from_output(interaction, seq_output)

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_weights().T
