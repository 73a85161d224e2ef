"""Named model variants for the comparison harness: every row of the paper's tables that applies offline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A model plus the property overrides that make this variant (shared settings come on top)."""

    name: str
    model: str
    overrides: tuple[str, ...] = ()
    baseline: bool = False  # baselines are what "relative improvement" is measured against
    description: str = ""

    @property
    def uses_semantic_files(self) -> bool:
        return self.model == "SRACL" and not {"--alpha=0", "--beta=0"} <= set(self.overrides)


K_SWEEP = (1, 5, 20, 100)  # k = 10 is SRACL itself
BETA_SWEEP = (0.02, 0.05, 0.2)  # beta = 0 is SRACL_wo_LIS, 0.1 is SRACL
SUBSTITUTION_SWEEP = (0.1, 0.4)  # 0.2 is SRACL
ALPHA_SWEEP = (0.05, 0.2, 0.4)  # weight of L_CS without L_IS (beta = 0); alpha = 0.1 is SRACL_wo_LIS
ALPHA_SWEEP_BACKBONES = ("GRU4Rec", "DuoRec")  # backbones with their own alpha sweep (group <backbone>_alphasweep)
IS_COS_TAU = 0.2  # temperature of the cosine L_IS variants (SGL's and SimCLR's usual range)
IS_COS_ALPHA = 0.2  # L_CS weight of the third cosine L_IS variant: best mean NDCG@20 of ALPHA_SWEEP on Office
IS_COS_OVERRIDES = ("--is_sim=cos", f"--is_tau={IS_COS_TAU}")  # L_IS with cosine similarity (L_CS keeps dot, 1)
IS_COS_LABEL = f"L_IS with cosine similarity, temperature {IS_COS_TAU}"
NEIGHBOUR_ENCODINGS = ("online", "online_unique", "no_grad", "cached")
# cosine L_IS variants: (name suffix, overrides, description) per form, (name prefix, overrides, description) per backbone
IS_COS_FORMS = (("", (), ""), ("_wo_LCS", ("--alpha=0",), "w/o L_CS, "),
                (f"_alpha{IS_COS_ALPHA}", (f"--alpha={IS_COS_ALPHA}",), f"alpha={IS_COS_ALPHA}, "))
IS_COS_BACKBONES = (("", (), ""), ("GRU4Rec+", ("--backbone=GRU4Rec",), "SRA-CL on GRU4Rec, "))

VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in [
        Variant("SASRec", "SASRec", baseline=True, description="Transformer, cross-entropy"),
        Variant("GRU4Rec", "GRU4Rec", baseline=True, description="GRU, cross-entropy"),
        Variant("CL4SRec", "CL4SRec", baseline=True, description="crop/mask/reorder contrastive"),
        Variant("DuoRec", "DuoRec", baseline=True, description="dropout + same-target contrastive"),
        Variant("SRACL", "SRACL", description="SRA-CL, SASRec backbone, package defaults"),
        # ablations (paper Table 3)
        Variant("SRACL_wo_LCS", "SRACL", ("--alpha=0",), description="w/o L_CS"),
        Variant("SRACL_wo_LIS", "SRACL", ("--beta=0",), description="w/o L_IS"),
        Variant("SRACL_wo_CL", "SRACL", ("--alpha=0", "--beta=0"), description="w/o CL (SASRec inside SRACL)"),
        Variant("SRACL_Unlearnable", "SRACL", ("--synthesizer=uniform",),
                description="random pick instead of the learned synthesizer"),
        # backbones (paper Figure 4)
        Variant("GRU4Rec+SRACL", "SRACL", ("--backbone=GRU4Rec",), description="SRA-CL on GRU4Rec"),
        Variant("GRU4Rec+SRACL_wo_LIS", "SRACL", ("--backbone=GRU4Rec", "--beta=0"),
                description="SRA-CL on GRU4Rec, cross-sequence loss only"),
        Variant("GRU4Rec+SRACL_wo_LCS", "SRACL", ("--backbone=GRU4Rec", "--alpha=0"),
                description="SRA-CL on GRU4Rec, item-level loss only"),
        *[Variant(f"{backbone}+SRACL_wo_LIS_alpha{alpha}", "SRACL", (f"--backbone={backbone}", "--beta=0", f"--alpha={alpha}"),
                  description=f"SRA-CL on {backbone}, cross-sequence loss only, alpha={alpha}")
          for backbone in ALPHA_SWEEP_BACKBONES for alpha in ALPHA_SWEEP],
        Variant("DuoRec+SRACL", "SRACL", ("--backbone=DuoRec",), description="SRA-CL on DuoRec"),
        Variant("DuoRec+SRACL_wo_LIS", "SRACL", ("--backbone=DuoRec", "--beta=0"),
                description="SRA-CL on DuoRec, cross-sequence loss only"),
        # k sweep (paper Figure 6)
        *[Variant(f"SRACL_k{k}", "SRACL", (f"--k={k}",), description=f"k={k}") for k in K_SWEEP],
        # weight of L_IS and how many items of a view are substituted
        *[Variant(f"SRACL_beta{beta}", "SRACL", (f"--beta={beta}",), description=f"beta={beta}") for beta in BETA_SWEEP],
        *[Variant(f"SRACL_sub{rate}", "SRACL", (f"--substitution_rate={rate}",), description=f"substitution_rate={rate}")
          for rate in SUBSTITUTION_SWEEP],
        *[Variant(f"SRACL_wo_LIS_alpha{alpha}", "SRACL", ("--beta=0", f"--alpha={alpha}"),
                  description=f"w/o L_IS, alpha={alpha}") for alpha in ALPHA_SWEEP],
        # control: L_IS with k random items per item instead of its k semantic neighbours
        Variant("SRACL_wo_LCS_random_pool", "SRACL", ("--alpha=0", "--substitution_pool=random"),
                description="w/o L_CS, random substitution candidates"),
        Variant("SRACL_random_pool", "SRACL", ("--substitution_pool=random",),
                description="random substitution candidates"),
        # reference: L_IS with each item's k most co-occurring items in the training split
        Variant("SRACL_wo_LCS_cooc_pool", "SRACL", ("--alpha=0", "--substitution_pool=cooccurrence"),
                description="w/o L_CS, co-occurrence substitution candidates"),
        Variant("SRACL_cooc_pool", "SRACL", ("--substitution_pool=cooccurrence",),
                description="co-occurrence substitution candidates"),
        # controls for L_CS: k random users, or the k users sharing most training items, instead of the k retrieved
        *[Variant(f"SRACL{ablation}_{short}_users", "SRACL", (*overrides, f"--user_pool={pool}"),
                  description=f"{label}{pool} L_CS candidates")
          for ablation, overrides, label in (("_wo_LIS", ("--beta=0",), "w/o L_IS, "), ("", (), ""))
          for short, pool in (("random", "random"), ("cooc", "cooccurrence"))],
        # L_CS with the official code's negatives (the other 2N-2 anchors and positives) instead of eq. (10)'s N-1
        Variant("SRACL_cs_symmetric", "SRACL", ("--cs_negatives=symmetric",),
                description="L_CS negatives: the other 2N-2 vectors (official code)"),
        Variant("SRACL_wo_LIS_cs_symmetric", "SRACL", ("--cs_negatives=symmetric", "--beta=0"),
                description="w/o L_IS, L_CS negatives: the other 2N-2 vectors (official code)"),
        # the official code's L_CS as a whole: 2N-2 negatives and gradients through the synthesized positives
        Variant("SRACL_cs_symmetric_online", "SRACL", ("--cs_negatives=symmetric", "--neighbour_encoding=online_unique"),
                description="L_CS negatives: the other 2N-2 vectors, positives encoded with gradients (official code)"),
        Variant("SRACL_wo_LIS_cs_symmetric_online", "SRACL",
                ("--cs_negatives=symmetric", "--neighbour_encoding=online_unique", "--beta=0"),
                description="w/o L_IS, L_CS negatives: the other 2N-2 vectors, positives encoded with gradients"),
        # L_CS's anchor from a second forward pass (own dropout mask), as the official code
        Variant("SRACL_cs_anchor_separate", "SRACL", ("--cs_anchor=separate",),
                description="L_CS anchor encoded in a second forward pass (official code)"),
        Variant("SRACL_wo_LIS_cs_anchor_separate", "SRACL", ("--cs_anchor=separate", "--beta=0"),
                description="w/o L_IS, L_CS anchor encoded in a second forward pass (official code)"),
        # L_CS per training prefix, as the official code (one semantic embedding per training row)
        Variant("SRACL_prefix", "SRACL", ("--user_granularity=prefix",), description="L_CS per training prefix"),
        Variant("SRACL_prefix_wo_LIS", "SRACL", ("--user_granularity=prefix", "--beta=0"),
                description="L_CS per training prefix, w/o L_IS"),
        Variant("SRACL_prefix_other_users_wo_LIS", "SRACL",
                ("--user_granularity=prefix", "--prefix_same_user=False", "--beta=0"),
                description="L_CS per training prefix, other users' prefixes only, w/o L_IS"),
        # the full method with other users' prefixes (ahead of DuoRec on its first two seeds), alpha 0.2 and cosine L_IS
        Variant(f"SRACL_prefix_other_users_alpha{IS_COS_ALPHA}_is_cos{IS_COS_TAU}", "SRACL",
                ("--user_granularity=prefix", "--prefix_same_user=False", f"--alpha={IS_COS_ALPHA}", *IS_COS_OVERRIDES),
                description=f"L_CS per training prefix, other users' prefixes only, alpha={IS_COS_ALPHA}, {IS_COS_LABEL}"),
        # L_IS with a normalised similarity: cosine and temperature 0.2 for L_IS alone (L_CS keeps the paper's dot, 1)
        *[Variant(f"{prefix}SRACL{ablation}_is_cos{IS_COS_TAU}", "SRACL",
                  (*backbone, *overrides, *IS_COS_OVERRIDES), description=f"{on_backbone}{label}{IS_COS_LABEL}")
          for prefix, backbone, on_backbone in IS_COS_BACKBONES for ablation, overrides, label in IS_COS_FORMS],
        # neighbour encoding modes (speed/accuracy trade-off)
        *[Variant(f"SRACL_{mode}", "SRACL", (f"--neighbour_encoding={mode}",), description=f"neighbour_encoding={mode}")
          for mode in NEIGHBOUR_ENCODINGS],
    ]
}

# the same runs selected (and early-stopped) on the popularity-balanced validation metric instead of the overall one
BALANCED_SELECTION = ("--valid_metric_average=popularity_groups",)
BALANCED_BASES = ("SASRec", "CL4SRec", "DuoRec", "SRACL", "SRACL_wo_LIS", "SRACL_wo_LIS_alpha0.2")
VARIANTS.update({
    f"{base.name}_balanced": Variant(f"{base.name}_balanced", base.model, base.overrides + BALANCED_SELECTION,
                                     baseline=base.baseline,
                                     description=f"{base.description}; selected on popularity-balanced validation")
    for base in (VARIANTS[name] for name in BALANCED_BASES)
})

GROUPS: dict[str, list[str]] = {
    "main": ["SASRec", "GRU4Rec", "CL4SRec", "DuoRec", "SRACL"],
    "ablations": ["SRACL_wo_LCS", "SRACL_wo_LIS", "SRACL_wo_CL", "SRACL_Unlearnable"],
    "backbones": ["GRU4Rec+SRACL", "GRU4Rec+SRACL_wo_LIS", "GRU4Rec+SRACL_wo_LCS",
                  "GRU4Rec+SRACL_wo_LIS_alpha0.2", "DuoRec+SRACL", "DuoRec+SRACL_wo_LIS"],
    "ksweep": [f"SRACL_k{k}" for k in K_SWEEP],
    "betasweep": [f"SRACL_beta{beta}" for beta in BETA_SWEEP],
    "subsweep": [f"SRACL_sub{rate}" for rate in SUBSTITUTION_SWEEP],
    "alphasweep": [f"SRACL_wo_LIS_alpha{alpha}" for alpha in ALPHA_SWEEP],
    **{f"{backbone.lower()}_alphasweep": [f"{backbone}+SRACL_wo_LIS_alpha{alpha}" for alpha in ALPHA_SWEEP]
       for backbone in ALPHA_SWEEP_BACKBONES},
    "pool": ["SRACL_wo_LCS_random_pool", "SRACL_random_pool", "SRACL_wo_LCS_cooc_pool", "SRACL_cooc_pool"],
    "userpool": ["SRACL_wo_LIS_random_users", "SRACL_wo_LIS_cooc_users", "SRACL_random_users", "SRACL_cooc_users"],
    "modes": [f"SRACL_{mode}" for mode in NEIGHBOUR_ENCODINGS],
    "negatives": ["SRACL_cs_symmetric", "SRACL_wo_LIS_cs_symmetric", "SRACL_cs_symmetric_online",
                  "SRACL_wo_LIS_cs_symmetric_online"],
    "anchor": ["SRACL_cs_anchor_separate", "SRACL_wo_LIS_cs_anchor_separate"],
    "iscos": [f"{prefix}SRACL{ablation}_is_cos{IS_COS_TAU}" for prefix, _, _ in IS_COS_BACKBONES
              for ablation, _, _ in IS_COS_FORMS],
    "granularity": ["SRACL_prefix", "SRACL_prefix_wo_LIS", "SRACL_prefix_other_users_wo_LIS",
                    f"SRACL_prefix_other_users_alpha{IS_COS_ALPHA}_is_cos{IS_COS_TAU}"],
    "balanced": [f"{name}_balanced" for name in BALANCED_BASES],
}


def expand(names: list[str]) -> list[Variant]:
    """Variant objects for a list of variant and group names, in order, without repeats.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    chosen: list[str] = []
    for name in names:
        members = GROUPS.get(name, [name])
        for member in members:
            if member not in VARIANTS:
                known = ", ".join(list(GROUPS) + list(VARIANTS))
                raise KeyError(f"unknown variant or group '{member}'; known: {known}")
            if member not in chosen:
                chosen.append(member)
    return [VARIANTS[name] for name in chosen]
