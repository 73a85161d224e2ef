"""One smoke test per model on the tiny dataset (1 epoch), plus SRACL's switches and checkpoint safety."""

import json

import pytest
import torch
from conftest import tiny_overrides

from recbole_sracl.errors import ConfigError
from recbole_sracl.quick_start import run

METRICS = {"hit@10", "hit@20", "ndcg@10", "ndcg@20"}


def check_result(result):
    assert set(result["test_result"]) == METRICS
    assert all(0.0 <= value <= 1.0 for value in result["test_result"].values())
    assert result["epochs_run"] == 1 and len(result["epoch_seconds"]) == 1
    assert result["epoch_valid_score"] == [pytest.approx(result["best_valid_score"])]  # the learning curve
    (losses,) = result["epoch_train_loss"]
    assert losses and all(0 <= value < float("inf") for value in losses)
    checkpoint = torch.load(result["best_model_file"], weights_only=True)  # no pickled Config inside
    assert checkpoint["config"]["model"] == result["model"]
    assert checkpoint["best_epoch"] == checkpoint["epoch"] == result["best_epoch"]  # not the previous best
    assert checkpoint["best_valid_result"] == pytest.approx(result["best_valid_result"])
    last = torch.load(result["last_checkpoint_file"], weights_only=True)
    assert last["epoch"] == 0 and "rng" in last
    for groups in result["test_result_by_group"].values():  # user-weighted group means = RecBole's overall numbers
        users = sum(group["users"] for group in groups.values())
        for metric, overall in result["test_result"].items():
            mean = sum(group["users"] * group[metric] for group in groups.values()) / users
            assert abs(mean - overall) <= 5e-5, (metric, mean, overall)
    assert set(result["test_result_by_group"]) == {"sequence_length", "target_popularity"}


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "CL4SRec", "DuoRec"])
def test_model_trains_one_epoch_and_reports_test_metrics(model, tiny_root, tiny_yaml, tmp_path):
    result_file = tmp_path / "result.json"
    result = run(model, "tiny", [str(tiny_yaml)], argv=tiny_overrides(tiny_root), result_file=str(result_file))
    check_result(result)
    assert json.loads(result_file.read_text())["test_result"] == result["test_result"]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--neighbour_encoding=online"],
        ["--neighbour_encoding=cached", "--cache_refresh_steps=2"],
        ["--neighbour_encoding=online_unique", "--neighbour_sample=3"],
        ["--neighbour_encoding=no_grad", "--synthesizer=mean", "--cs_negatives=symmetric"],
        ["--synthesizer=uniform", "--k=5"],
        ["--alpha=0"],
        ["--beta=0"],
        ["--alpha=0", "--beta=0"],
        ["--backbone=GRU4Rec"],
        ["--backbone=DuoRec"],
        ["--backbone=CL4SRec", "--neighbour_encoding=cached"],
        ["--user_granularity=prefix"],
        ["--user_granularity=prefix", "--beta=0", "--neighbour_encoding=online_unique", "--backbone=DuoRec"],
    ],
    ids=lambda extra: " ".join(extra) or "package-default",
)
def test_sracl_variants_train(extra, semantic_copy, tiny_yaml):
    import hashlib

    from recbole_sracl.model.sracl import SRACL

    result = run("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(semantic_copy, *extra))
    check_result(result)
    # the result names exactly the semantic files this configuration read, with their sha256
    suffixes = SRACL.semantic_suffixes(result["config"])
    if not suffixes:
        assert result["semantic_files"] is None
    else:
        folder = semantic_copy / "tiny"
        assert result["semantic_files"]["files"] == {
            f"tiny.{suffix}": hashlib.sha256((folder / f"tiny.{suffix}").read_bytes()).hexdigest()
            for suffix in suffixes}
        assert result["semantic_files"]["options"]["llm"] == {"provider": "none"}


@pytest.mark.parametrize("pool", ["random", "cooccurrence"])
def test_sracl_substitution_pools_train_without_semantic_files(pool, tiny_root, tiny_yaml):
    # w/o L_CS with random or co-occurrence candidates reads no semantic file: the plain tiny dataset has none
    assert not list(tiny_root.rglob("*.inbr"))
    result = run("SRACL", "tiny", [str(tiny_yaml)],
                 argv=tiny_overrides(tiny_root, "--alpha=0", f"--substitution_pool={pool}"))
    check_result(result)


def sracl_with_training_data(semantic_copy, tiny_yaml, *extra):
    """An SRACL model on the tiny dataset, its first training batch and its training dataset."""
    from recbole_sracl.data.utils import create_dataset, data_preparation
    from recbole_sracl.model.sracl import SRACL
    from recbole_sracl.quick_start import build_config

    config = build_config("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(semantic_copy, *extra))
    SRACL.prepare_config(config)
    train, _, _ = data_preparation(config, create_dataset(config), SRACL.build_train_augmenter)
    return SRACL(config, train._dataset), next(iter(train)), train._dataset


def sracl_with_batch(semantic_copy, tiny_yaml, *extra):
    """An SRACL model on the tiny dataset and its first training batch."""
    return sracl_with_training_data(semantic_copy, tiny_yaml, *extra)[:2]


def test_sracl_losses_match_the_enabled_terms(semantic_copy, tiny_yaml):
    # the losses logged per epoch: backbone CE, alpha * L_CS, beta * L_IS
    model, batch = sracl_with_batch(semantic_copy, tiny_yaml)
    losses = model.calculate_loss(batch)
    assert len(losses) == 3 and all(torch.isfinite(loss) for loss in losses)
    # inference is the backbone alone
    model.eval()
    assert torch.equal(model.full_sort_predict(batch), model.backbone.full_sort_predict(batch))


@pytest.mark.parametrize("pool", ["random", "cooccurrence"])
def test_sracl_user_pools_replace_the_retrieved_users_and_need_no_unbr(pool, semantic_copy, tiny_yaml):
    # the L_CS candidates come from the control pool; the synthesizer still reads .uemb, .unbr is not needed
    from recbole_sracl.data.augment import cooccurrence_pool, random_pool
    from recbole_sracl.data.sequences import buyers_by_item, training_histories

    (semantic_copy / "tiny" / "tiny.unbr").unlink()
    model, batch, train = sracl_with_training_data(semantic_copy, tiny_yaml, "--beta=0", f"--user_pool={pool}", "--k=3",
                                                   "--seed=7")
    num_users = model.anchor_sequences.size(0)
    if pool == "random":
        expected, counts = random_pool(num_users, 3, torch.Generator().manual_seed(7))
    else:
        expected, counts = cooccurrence_pool(buyers_by_item(training_histories(train)), num_users, 3)
    assert torch.equal(model.anchor_neighbours, expected) and torch.equal(model.anchor_neighbour_count, counts)
    assert model.anchor_semantic.shape[0] == num_users and counts[1:].min() >= 1
    assert all(torch.isfinite(loss) for loss in model.calculate_loss(batch))


@pytest.mark.parametrize("cs_anchor", ["shared", "separate"])
def test_sracl_cs_anchor_is_the_ce_encoding_or_a_second_pass(cs_anchor, semantic_copy, tiny_yaml, monkeypatch):
    # shared: L_CS contrasts the very tensor the next-item loss used; separate: a second pass over the same
    # sequences, different under dropout and equal without it
    from recbole_sracl.model import sracl

    seen = {}
    next_item_loss, cross_sequence_loss = sracl.recommendation_loss, sracl.SRACL.cross_sequence_loss

    def spy_next_item_loss(model, interaction, seq_output):
        seen["ce"] = seq_output
        return next_item_loss(model, interaction, seq_output)

    def spy_cross_sequence_loss(model, anchors, seq_output):
        seen["cs"] = seq_output
        return cross_sequence_loss(model, anchors, seq_output)

    monkeypatch.setattr(sracl, "recommendation_loss", spy_next_item_loss)
    monkeypatch.setattr(sracl.SRACL, "cross_sequence_loss", spy_cross_sequence_loss)
    for dropout in (0.5, 0.0):
        model, batch = sracl_with_batch(semantic_copy, tiny_yaml, "--beta=0", f"--cs_anchor={cs_anchor}",
                                        f"--hidden_dropout_prob={dropout}", f"--attn_dropout_prob={dropout}")
        model.calculate_loss(batch)
        if cs_anchor == "shared":
            assert seen["cs"] is seen["ce"]
        elif dropout:
            assert seen["cs"].shape == seen["ce"].shape and not torch.allclose(seen["cs"], seen["ce"])
        else:
            assert seen["cs"] is not seen["ce"] and torch.allclose(seen["cs"], seen["ce"], atol=1e-6)


@pytest.mark.parametrize("extra, cs_expected, is_expected", [
    ((), (1.0, "dot"), (1.0, "dot")),  # package default: both losses as the paper (dot product, temperature 1)
    (("--is_tau=0.2", "--is_sim=cos"), (1.0, "dot"), (0.2, "cos")),  # L_IS alone changed
    (("--tau=0.5", "--sim=cos"), (0.5, "cos"), (0.5, "cos")),  # null is_* follow tau / sim
])
def test_sracl_is_tau_and_is_sim_reach_only_the_intra_sequence_loss(extra, cs_expected, is_expected, semantic_copy,
                                                                     tiny_yaml, monkeypatch):
    from recbole_sracl.model import sracl

    calls = []

    def spy_info_nce(anchor, positive, temperature, similarity, negatives):
        calls.append((temperature, similarity, negatives))
        return info_nce(anchor, positive, temperature, similarity, negatives)

    info_nce = sracl.info_nce
    monkeypatch.setattr(sracl, "info_nce", spy_info_nce)
    model, batch = sracl_with_batch(semantic_copy, tiny_yaml, *extra)
    model.calculate_loss(batch)
    assert calls == [(*cs_expected, "batch"), (*is_expected, "symmetric")]  # L_CS (eq. 10), then L_IS (eq. 14)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--alpha=-0.1", "alpha must be a number >= 0"),
        ("--substitution_rate=1.5", "substitution_rate must be between 0 and 1"),
        ("--backbone=BERT4Rec", "backbone must be one of"),
        ("--synthesizer=magic", "synthesizer must be one of"),
        ("--neighbour_encoding=later", "neighbour_encoding must be one of"),
        ("--k=0", "k must be an integer >= 1"),
        ("--tau=0", "tau must be a number > 0"),
        ("--is_tau=-1", "is_tau must be a number > 0 or null"),
        ("--is_sim=euclid", "is_sim must be one of dot, cos or null"),
        ("--user_granularity=session", "user_granularity must be one of"),
        ("--prefix_same_user=1", "prefix_same_user must be True or False"),
        ("--substitution_pool=popular", "substitution_pool must be one of"),
        ("--cs_anchor=both", "cs_anchor must be one of"),
        ("--user_pool=popular", "user_pool must be one of"),
        ("--user_pool=random --user_granularity=prefix", "user_pool=random needs user_granularity=user"),
    ],
)
def test_invalid_sracl_values_fail_before_loading_data(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run("SRACL", "no-such-dataset", argv=[f"--data_path={tmp_path}", *override.split()])


@pytest.mark.parametrize(
    ("alpha", "negatives", "encoding", "warns"),
    [(0.1, "symmetric", "cached", True), (0.1, "symmetric", "no_grad", True),
     (0.1, "symmetric", "online_unique", False), (0.1, "symmetric", "online", False),
     (0.1, "batch", "cached", False), (0, "symmetric", "cached", False)],
)
def test_sracl_warns_about_the_diverging_l_cs_setting(alpha, negatives, encoding, warns):
    from recbole_sracl.model.sracl import divergence_warning

    message = divergence_warning({"alpha": alpha, "cs_negatives": negatives, "neighbour_encoding": encoding})
    if warns:
        assert message.startswith(f"SRACL: cs_negatives=symmetric with neighbour_encoding={encoding} diverges")
        assert message.endswith("set neighbour_encoding=online_unique (gradients through the positives, as the "
                                "official code) or cs_negatives=batch")
    else:
        assert message is None


def test_invalid_baseline_values(tmp_path):
    with pytest.raises(ConfigError, match="contrast must be one of"):
        run("DuoRec", "x", argv=[f"--data_path={tmp_path}", "--contrast=both"])
    with pytest.raises(ConfigError, match="mask_gamma must be between 0 and 1"):
        run("CL4SRec", "x", argv=[f"--data_path={tmp_path}", "--mask_gamma=2"])


@pytest.mark.parametrize("override", ["--group_by_sequence_length=[11, 7]", "--group_by_target_popularity=5",
                                      "--group_by_sequence_length=[7.5]"])
def test_invalid_group_bounds_fail_before_training(override, tmp_path):
    with pytest.raises(ConfigError, match="must be a strictly increasing list of integers"):
        run("SASRec", "x", argv=[f"--data_path={tmp_path}", override])
