"""SRA-CL (Cui et al., "Semantic Retrieval Augmented Contrastive Learning for Sequential Recommendation",
NeurIPS 2025), as a RecBole ``SequentialRecommender`` wrapped around any supported backbone.

Training loss (paper eq. 15, section 5.3 for other backbones)::

    L = L_backbone + alpha * L_CS + beta * L_IS

- ``L_backbone``: the backbone's own loss (cross-entropy for SASRec/GRU4Rec; DuoRec and CL4SRec keep their
  contrastive terms).
- ``L_CS`` (cross-sequence, eq. 7-10): for user u with semantic embedding e_u and retrieved neighbours N_u,
  p = softmax_{u'}(LeakyReLU(a^T [W e_u || W e_u'])) (dropout on p as in the official code), the positive is
  h_u+ = sum_u' p_u,u' h_u' with h_u' the backbone's encoding of u''s training sequence, and InfoNCE uses the
  other synthesized positives of the batch as negatives (``cs_negatives: symmetric`` and ``cs_anchor: separate``
  give the official code's 2N-2 negatives and its second forward pass for h_u). ``user_granularity: prefix``
  does the same per training prefix, as the official code does: each training row has its own semantic
  embedding and its neighbours are other training prefixes (of any user, the same one included), encoded from
  their own items. ``user_pool: random`` swaps each user's k retrieved neighbours for k random users, and
  ``cooccurrence`` for the k users sharing most training items (controls for what the semantic retrieval brings
  to L_CS; the synthesizer still scores them with the users' semantic embeddings).
- ``L_IS`` (intra-sequence, eq. 14): two views in which each item is replaced with probability
  ``substitution_rate`` by one of its k semantic neighbours (a train-time batch augmenter); InfoNCE with the
  other 2N-2 views as negatives. ``substitution_pool: random`` swaps the semantic neighbours for k random items
  per item (a control that isolates what the semantics contribute); ``cooccurrence`` for the k items most often
  bought by the same users in the training split (a collaborative reference: what item neighbours built from
  the interactions themselves give L_IS).

Inference uses the backbone only. Semantic files (``.uemb``, ``.unbr``, ``.inbr``) are produced offline by
``python -m recbole_sracl.semantic build`` and loaded through RecBole's ``additional_feat_suffix``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from logging import getLogger

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_sracl.data.augment import cooccurrence_pool, random_pool
from recbole_sracl.data.augmenters import SUBSTITUTED_SEQ, TRAIN_ROW, SubstitutionAugmenter, TrainRowAugmenter, compose
from recbole_sracl.data.sequences import (
    USER_GRANULARITIES,
    buyers_by_item,
    neighbour_table,
    prefix_token,
    split_prefix_token,
    training_histories,
    training_prefix_lengths,
    training_sequence_table,
)
from recbole_sracl.errors import SemanticFilesError
from recbole_sracl.model.layers import (
    SIMILARITIES,
    check_contrastive_config,
    encode_together,
    info_nce,
    recommendation_loss,
    require,
    require_choice,
)
from recbole_sracl.utils import get_model

SUPPORTED_BACKBONES = ("SASRec", "GRU4Rec", "DuoRec", "CL4SRec")
SYNTHESIZERS = ("learnable", "uniform", "mean")
NEIGHBOUR_ENCODINGS = ("online", "online_unique", "no_grad", "cached")
CS_NEGATIVES = ("batch", "symmetric")
CS_ANCHORS = ("shared", "separate")
GRADIENT_FREE_ENCODINGS = ("cached", "no_grad")  # synthesized positives carry no gradient
SUBSTITUTION_POOLS = ("semantic", "random", "cooccurrence")
USER_POOLS = SUBSTITUTION_POOLS  # where L_CS's k neighbours of a user come from (``user_pool``)


def divergence_warning(config) -> str | None:
    """Why this configuration's L_CS is known to diverge (to log before training), or ``None``.

    With ``cs_negatives: symmetric`` the positive-positive similarities sit in the InfoNCE denominator; when the
    positives carry no gradient nothing keeps them down and L_CS grows every epoch (Amazon_Office:
    benchmarks/README.md item 16).
    """
    if config["alpha"] > 0 and config["cs_negatives"] == "symmetric" \
            and config["neighbour_encoding"] in GRADIENT_FREE_ENCODINGS:
        return (f"SRACL: cs_negatives=symmetric with neighbour_encoding={config['neighbour_encoding']} diverges "
                "(the positive-positive terms get no gradient; on Amazon_Office L_CS grew every epoch with both "
                "cached and no_grad, and with cached test NDCG@20 fell 28%): set neighbour_encoding=online_unique "
                "(gradients through the positives, as the official code) or cs_negatives=batch")
    return None


def candidate_table(pool: str, dataset, suffix: str, num_rows: int, k: int, seed: int,
                    cooccurrence_histories: Callable[[], Mapping[int, Iterable[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k candidates (substitute items for L_IS, users for L_CS) from ``pool``, as ``(ids, counts)``.

    ``semantic``: the loaded neighbour file ``suffix`` (the paper); ``random``: k rows drawn uniformly, seeded
    (a control that keeps everything but the semantics); ``cooccurrence``: the k rows sharing most members in
    ``cooccurrence_histories()`` (a collaborative reference from the training split; built only when asked for).
    """
    if pool == "random":
        return random_pool(num_rows, k, torch.Generator().manual_seed(seed))
    if pool == "cooccurrence":
        return cooccurrence_pool(cooccurrence_histories(), num_rows, k)
    return neighbour_table(dataset, suffix, num_rows, k)


class SRACL(SequentialRecommender):
    """SRA-CL around a backbone (``backbone`` key): backbone loss + alpha * L_CS + beta * L_IS."""

    has_backbone = True  # tells Config to load the backbone's yaml layers too
    default_backbone = "SASRec"

    # ---- class-level hooks used by recbole_sracl.quick_start ------------------------------------------------

    @classmethod
    def validate_config(cls, config) -> None:
        """Check every SRA-CL key (and the backbone's) before any data is loaded."""
        check_contrastive_config(config, "SRACL", ["alpha", "beta"])
        require_choice(config, "SRACL", "backbone", SUPPORTED_BACKBONES)
        k = config["k"]
        require(isinstance(k, int) and not isinstance(k, bool) and k >= 1, f"SRACL: k must be an integer >= 1, got {k!r}")
        rate = config["substitution_rate"]
        require(isinstance(rate, (int, float)) and 0 <= rate <= 1,
                f"SRACL: substitution_rate must be between 0 and 1, got {rate!r}")
        require_choice(config, "SRACL", "substitution_pool", SUBSTITUTION_POOLS)
        require_choice(config, "SRACL", "synthesizer", SYNTHESIZERS)
        dropout = config["synthesizer_dropout"]
        require(isinstance(dropout, (int, float)) and 0 <= dropout < 1,
                f"SRACL: synthesizer_dropout must be in [0, 1), got {dropout!r}")
        require_choice(config, "SRACL", "neighbour_encoding", NEIGHBOUR_ENCODINGS)
        require_choice(config, "SRACL", "cs_negatives", CS_NEGATIVES)
        require_choice(config, "SRACL", "cs_anchor", CS_ANCHORS)
        require_choice(config, "SRACL", "user_granularity", USER_GRANULARITIES)
        require_choice(config, "SRACL", "user_pool", USER_POOLS)
        require(config["user_pool"] == "semantic" or config["user_granularity"] == "user",
                f"SRACL: user_pool={config['user_pool']} needs user_granularity=user (per-prefix neighbours come "
                "only from the .pnbr file)")
        require(isinstance(config["prefix_same_user"], bool),
                f"SRACL: prefix_same_user must be True or False, got {config['prefix_same_user']!r}")
        sample = config["neighbour_sample"]
        require(isinstance(sample, int) and 0 <= sample <= k,
                f"SRACL: neighbour_sample must be an integer between 0 and k={k}, got {sample!r}")
        is_tau = config["is_tau"]
        require(is_tau is None or (isinstance(is_tau, (int, float)) and not isinstance(is_tau, bool) and is_tau > 0),
                f"SRACL: is_tau must be a number > 0 or null (= tau), got {is_tau!r}")
        require(config["is_sim"] is None or config["is_sim"] in SIMILARITIES,
                f"SRACL: is_sim must be one of {', '.join(SIMILARITIES)} or null (= sim), got {config['is_sim']!r}")
        refresh = config["cache_refresh_steps"]
        require(isinstance(refresh, int) and refresh >= 0, f"SRACL: cache_refresh_steps must be >= 0, got {refresh!r}")
        validate_backbone = getattr(get_model(config["backbone"]), "validate_config", None)
        if validate_backbone is not None:
            validate_backbone(config)

    @classmethod
    def semantic_suffixes(cls, config) -> list[str]:
        """The semantic files this configuration trains with (none for alpha = beta = 0)."""
        if config["user_granularity"] == "prefix":
            cross_sequence = ["pemb", "pnbr"]
        else:  # the synthesizer always reads .uemb; the neighbour lists come from .unbr only with the semantic pool
            cross_sequence = ["uemb", "unbr"] if config["user_pool"] == "semantic" else ["uemb"]
        item_side = config["beta"] > 0 and config["substitution_pool"] == "semantic"
        return (cross_sequence if config["alpha"] > 0 else []) + (["inbr"] if item_side else [])

    @classmethod
    def prepare_config(cls, config) -> dict | None:
        """Check (or, for ml-100k, build) the semantic files and register them with RecBole's loader.

        Returns what the run trains with, for its result file: the files' hashes and how they were built
        (``None`` when this configuration reads no semantic file).
        """
        from recbole_sracl.semantic.files import register_semantic_files, used_files

        suffixes = cls.semantic_suffixes(config)
        manifest = register_semantic_files(config, suffixes)
        return None if manifest is None else used_files(manifest, suffixes)

    @classmethod
    def build_train_augmenter(cls, config, train_dataset):
        """The backbone's augmenter (DuoRec/CL4SRec), the semantic substitution views when beta > 0, and each
        row's index into the training split when L_CS works per training prefix."""
        backbone_factory = getattr(get_model(config["backbone"]), "build_train_augmenter", None)
        backbone_augmenter = backbone_factory(config, train_dataset) if backbone_factory else None
        substitution = row_index = None
        if config["beta"] > 0:
            neighbours, counts = candidate_table(
                config["substitution_pool"], train_dataset, "inbr", train_dataset.num(config["ITEM_ID_FIELD"]),
                config["k"], int(config["seed"]), lambda: training_histories(train_dataset))
            substitution = SubstitutionAugmenter(config, neighbours, counts)
        if config["alpha"] > 0 and config["user_granularity"] == "prefix":
            row_index = TrainRowAugmenter(config)
        return compose(backbone_augmenter, substitution, row_index)

    # ---- model -------------------------------------------------------------------------------------------

    def __init__(self, config, dataset):
        self.validate_config(config)
        super().__init__(config, dataset)
        self.backbone = get_model(config["backbone"])(config, dataset)
        self.alpha, self.beta = float(config["alpha"]), float(config["beta"])
        self.tau, self.sim = config["tau"], config["sim"]
        self.is_tau = self.tau if config["is_tau"] is None else config["is_tau"]
        self.is_sim = self.sim if config["is_sim"] is None else config["is_sim"]
        self.k = config["k"]
        self.synthesizer = config["synthesizer"]
        self.neighbour_encoding = config["neighbour_encoding"]
        self.neighbour_sample = config["neighbour_sample"]
        self.cache_refresh_steps = config["cache_refresh_steps"]
        self.cs_negatives = config["cs_negatives"]
        self.separate_cs_anchor = self.alpha > 0 and config["cs_anchor"] == "separate"
        self.per_prefix = config["user_granularity"] == "prefix"
        self.steps_since_refresh = 0
        warning = divergence_warning(config)
        if warning is not None:
            getLogger(__name__).warning(warning)
        if self.alpha > 0:
            self._init_cross_sequence(config, dataset)

    def _init_cross_sequence(self, config, dataset) -> None:
        """Tables over the L_CS anchors (users, or training prefixes shifted by one; row 0 is padding)."""
        if self.per_prefix:
            semantic, neighbours, counts, sequences, lengths = self._prefix_tables(config, dataset)
        else:
            semantic, neighbours, counts, sequences, lengths = self._user_tables(config, dataset)
        self.register_buffer("anchor_semantic", semantic, persistent=False)
        self.register_buffer("anchor_neighbours", neighbours, persistent=False)
        self.register_buffer("anchor_neighbour_count", counts, persistent=False)
        self.register_buffer("anchor_sequences", sequences, persistent=False)
        self.register_buffer("anchor_lengths", lengths.clamp(min=1), persistent=False)
        self.register_buffer("anchor_cache", torch.zeros(0), persistent=False)
        hidden = self._hidden_size(config)
        # adapter W (semantic dim -> d) and attention vector a (2d), initialised as in the official code
        self.adapter = nn.Parameter(torch.empty(semantic.size(1), hidden))
        self.attention = nn.Parameter(torch.empty(2 * hidden, 1))
        nn.init.xavier_uniform_(self.adapter, gain=1.414)
        nn.init.xavier_uniform_(self.attention, gain=1.414)
        self.leaky_relu = nn.LeakyReLU(config["leaky_relu_slope"])
        self.synthesizer_dropout = nn.Dropout(config["synthesizer_dropout"])

    def _user_tables(self, config, dataset):
        uid_field = dataset.uid_field
        num_users = dataset.num(uid_field)
        real_users = int(torch.unique(dataset.inter_feat[uid_field]).numel())
        if num_users - 1 > real_users:
            raise SemanticFilesError(
                f"the user semantic files of '{config['dataset']}' name {num_users - 1 - real_users} user id(s) "
                f"that are not in the dataset's training data; rebuild them: "
                f"python -m recbole_sracl.semantic build --dataset={config['dataset']}"
            )
        semantic = torch.as_tensor(dataset.get_preload_weight("uemb_id"), dtype=torch.float32)
        histories = training_histories(dataset)
        neighbours, counts = candidate_table(config["user_pool"], dataset, "unbr", num_users, self.k,
                                             int(config["seed"]), lambda: buyers_by_item(histories))
        sequences, lengths = training_sequence_table(histories, num_users, self.max_seq_length)
        return semantic, neighbours, counts, sequences, lengths

    def _prefix_tables(self, config, dataset):
        from recbole_sracl.semantic.files import build_command, read_embedding_file, read_neighbour_file, semantic_path

        users, prefix_lengths = training_prefix_lengths(dataset)
        user_tokens = dataset.field2id_token[dataset.uid_field]
        anchor_of = {prefix_token(user_tokens[user], length): row + 1
                     for row, (user, length) in enumerate(zip(users.tolist(), prefix_lengths.tolist()))}
        tokens, vectors = read_embedding_file(semantic_path(config, "pemb"), "pemb")
        _, lists = read_neighbour_file(semantic_path(config, "pnbr"), "pnbr")
        unknown = set(anchor_of) - set(tokens)
        if unknown or len(tokens) != len(anchor_of):
            raise SemanticFilesError(
                f"the prefix semantic files of '{config['dataset']}' do not match its training prefixes "
                f"({len(tokens)} in the files, {len(anchor_of)} in the training split, e.g. "
                f"'{next(iter(unknown or set(tokens) - set(anchor_of)))}'); rebuild them: {build_command(config)}"
            )
        rows = torch.tensor([anchor_of[token] for token in tokens])
        semantic = torch.zeros(len(anchor_of) + 1, vectors.shape[1])
        semantic[rows] = torch.as_tensor(vectors, dtype=torch.float32)
        neighbours = torch.zeros(len(anchor_of) + 1, self.k, dtype=torch.long)
        for row, token, names in zip(rows.tolist(), tokens, lists):
            if not config["prefix_same_user"]:  # keep only other users' prefixes (an ablation)
                own = split_prefix_token(token)[0]
                names = [name for name in names if split_prefix_token(name)[0] != own]
            chosen = [anchor_of[name] for name in names[: self.k]]
            neighbours[row, : len(chosen)] = torch.tensor(chosen, dtype=torch.long)
        features = dataset.inter_feat
        sequences = torch.cat([torch.zeros(1, self.max_seq_length, dtype=torch.long), features[self.ITEM_SEQ].long()])
        lengths = torch.cat([torch.zeros(1, dtype=torch.long), features[self.ITEM_SEQ_LEN].long()])
        return semantic, neighbours, (neighbours > 0).sum(dim=1), sequences, lengths

    @staticmethod
    def _hidden_size(config) -> int:
        """Size of the backbone's sequence representation."""
        return config["embedding_size"] if config["backbone"] == "GRU4Rec" else config["hidden_size"]

    def forward(self, item_seq, item_seq_len):
        return self.backbone.forward(item_seq, item_seq_len)

    # ---- L_CS --------------------------------------------------------------------------------------------

    def synthesis_weights(self, anchors: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """``[B, m]`` weights p over each anchor's candidate neighbours (0 for padding candidates)."""
        valid = neighbours > 0
        if self.synthesizer == "uniform":  # "Unlearnable": one valid candidate at random
            scores = torch.rand(neighbours.shape, device=neighbours.device).masked_fill(~valid, -1.0)
            return F.one_hot(scores.argmax(dim=1), neighbours.size(1)).to(self.anchor_semantic.dtype)
        if self.synthesizer == "mean":
            return valid.float() / valid.sum(dim=1, keepdim=True).clamp(min=1)
        hidden = self.adapter.size(1)
        # a^T [W e_u || W e_u'] = (W^T a_1) . e_u + (W^T a_2) . e_u'
        query_vector = self.adapter @ self.attention[:hidden, 0]
        key_vector = self.adapter @ self.attention[hidden:, 0]
        scores = (self.anchor_semantic[anchors] @ query_vector).unsqueeze(1) + self.anchor_semantic[neighbours] @ key_vector
        scores = self.leaky_relu(scores).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
        return self.synthesizer_dropout(weights)

    def _sample_candidates(self, neighbours: torch.Tensor) -> torch.Tensor:
        """Keep ``neighbour_sample`` random candidates per row (valid ones first), or all when 0."""
        if not self.neighbour_sample or self.neighbour_sample >= neighbours.size(1):
            return neighbours
        keys = torch.rand(neighbours.shape, device=neighbours.device) + (neighbours == 0).float()
        chosen = keys.argsort(dim=1)[:, : self.neighbour_sample]
        return neighbours.gather(1, chosen)

    def _encode_anchors(self, anchors: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward(self.anchor_sequences[anchors], self.anchor_lengths[anchors])

    def neighbour_representations(self, neighbours: torch.Tensor) -> torch.Tensor:
        """``[B, m, d]`` backbone encodings of the candidates' training sequences, per ``neighbour_encoding``."""
        if self.neighbour_encoding == "cached":
            if self.anchor_cache.numel() == 0:
                self.refresh_cache()
            return self.anchor_cache[neighbours]
        if self.neighbour_encoding == "online":  # paper / official code: every slot, with gradients
            flat = self._encode_anchors(neighbours.reshape(-1))
            return flat.view(*neighbours.shape, -1)
        unique, inverse = torch.unique(neighbours, return_inverse=True)
        if self.neighbour_encoding == "no_grad":
            with torch.no_grad():
                encoded = self._encode_anchors(unique)
        else:
            encoded = self._encode_anchors(unique)
        return encoded[inverse]

    @torch.no_grad()
    def refresh_cache(self, batch_size: int = 2048) -> None:
        """Re-encode every anchor's sequence (user or training prefix) in eval mode (``neighbour_encoding: cached``)."""
        was_training = self.training
        self.eval()
        anchors = torch.arange(self.anchor_sequences.size(0), device=self.anchor_sequences.device)
        self.anchor_cache = torch.cat([self._encode_anchors(chunk) for chunk in anchors.split(batch_size)])
        self.train(was_training)
        self.steps_since_refresh = 0

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch: refresh the neighbour cache."""
        if self.alpha > 0 and self.neighbour_encoding == "cached":
            self.refresh_cache()

    def cross_sequence_loss(self, anchors: torch.Tensor, seq_output: torch.Tensor) -> torch.Tensor:
        """L_CS (eq. 10): InfoNCE between h_u and the synthesized positive h_u+."""
        if self.neighbour_encoding == "cached" and self.cache_refresh_steps:
            self.steps_since_refresh += 1
            if self.steps_since_refresh >= self.cache_refresh_steps:
                self.refresh_cache()
        neighbours = self._sample_candidates(self.anchor_neighbours[anchors])
        weights = self.synthesis_weights(anchors, neighbours)
        positive = (weights.unsqueeze(-1) * self.neighbour_representations(neighbours)).sum(dim=1)
        return info_nce(seq_output, positive, self.tau, self.sim, self.cs_negatives)

    # ---- RecBole API ---------------------------------------------------------------------------------------

    def calculate_loss(self, interaction):
        item_seq, item_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        batches = [(item_seq, item_len)]
        if self.beta > 0:
            batches += [(interaction[SUBSTITUTED_SEQ[0]], item_len), (interaction[SUBSTITUTED_SEQ[1]], item_len)]
        if self.separate_cs_anchor:  # the same sequences again: L_CS's anchor gets its own dropout mask
            batches.append((item_seq, item_len))
        outputs = encode_together(self.backbone.forward, batches)
        seq_output = outputs[0]
        losses = list(recommendation_loss(self.backbone, interaction, seq_output))
        if self.alpha > 0:
            anchors = interaction[TRAIN_ROW] + 1 if self.per_prefix else interaction[self.USER_ID]
            cs_anchor = outputs[-1] if self.separate_cs_anchor else seq_output
            losses.append(self.alpha * self.cross_sequence_loss(anchors, cs_anchor))
        if self.beta > 0:
            losses.append(self.beta * info_nce(outputs[1], outputs[2], self.is_tau, self.is_sim, "symmetric"))
        return tuple(losses)

    def predict(self, interaction):
        return self.backbone.predict(interaction)

    def full_sort_predict(self, interaction):
        return self.backbone.full_sort_predict(interaction)

