"""Exact values of the per-group test metrics (paper Figure 7's user groups, test-item popularity groups)."""

import math

import numpy as np
import pytest

from recbole_sracl.evaluation import group_labels, group_order, metrics_by_group


def test_group_labels_follow_half_open_bounds():
    values = np.array([1, 6, 7, 10, 11, 40])
    assert group_labels(values, [7, 11]).tolist() == ["<7", "<7", "7-10", "7-10", ">10", ">10"]
    assert group_labels(np.array([5, 6, 7, 21]), [6, 7, 21]).tolist() == ["<6", "6", "7-20", ">20"]
    assert sorted([">20", "7-20", "<6", "6"], key=group_order) == ["<6", "6", "7-20", ">20"]


@pytest.mark.parametrize("bounds", [[], [7, 7], [11, 7]])
def test_group_labels_refuse_bad_bounds(bounds):
    with pytest.raises(ValueError, match="strictly increasing"):
        group_labels(np.array([1]), bounds)


def test_metrics_by_group_exact_values():
    ranks = np.array([0, 3, 20, 12, 1])  # 0 = first place; 20 = not in the top 20
    labels = np.array(["a", "b", "a", "b", "a"], dtype=object)
    result = metrics_by_group(ranks, labels, ["hit", "ndcg", "mrr"], [10, 20])
    assert list(result) == ["a", "b"]
    a, b = result["a"], result["b"]
    assert a["users"] == 3 and b["users"] == 2
    assert a["hit@10"] == pytest.approx(2 / 3) and a["hit@20"] == pytest.approx(2 / 3)
    assert b["hit@10"] == pytest.approx(1 / 2) and b["hit@20"] == pytest.approx(1.0)
    assert a["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 3)
    assert b["ndcg@20"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(14)) / 2)
    assert b["ndcg@10"] == pytest.approx((1 / math.log2(5)) / 2)
    assert a["mrr@10"] == pytest.approx((1.0 + 0.5) / 3) and b["mrr@20"] == pytest.approx((1 / 4 + 1 / 13) / 2)


def test_full_sort_test_scores_masks_padding_and_history_like_recbole():
    import torch
    from recbole.data.interaction import Interaction

    from recbole_sracl.errors import DatasetError
    from recbole_sracl.evaluation import full_sort_test_scores

    class FixedScores:
        def full_sort_predict(self, interaction):
            return torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.2, 0.3, 0.8, 0.4]])

    batch = Interaction({"user_id": torch.tensor([5, 6])})
    history = (torch.tensor([0, 1]), torch.tensor([1, 2]))  # user 5 saw item 1, user 6 saw item 2
    split = [(batch, history, torch.tensor([0, 1]), torch.tensor([3, 3]))]
    ((interaction, scores, targets),) = list(full_sort_test_scores(FixedScores(), split))
    inf = float("-inf")
    assert scores.tolist() == [[inf, inf, 0.5, pytest.approx(0.7)], [inf, pytest.approx(0.3), inf, pytest.approx(0.4)]]
    assert targets.tolist() == [3, 3] and interaction["user_id"].tolist() == [5, 6]
    two_items_for_user_5 = [(batch, None, torch.tensor([0, 0]), torch.tensor([2, 3]))]
    with pytest.raises(DatasetError, match="one test item per user"):
        list(full_sort_test_scores(FixedScores(), two_items_for_user_5))


def _full_sort_split(batches):
    """A stand-in for RecBole's full-ranking test loader that yields ``batches``."""
    from unittest import mock

    from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader

    split = mock.MagicMock(spec=FullSortEvalDataLoader)
    split._dataset = mock.MagicMock(uid_field="user_id")
    split.__iter__.return_value = iter(batches)
    return split


def test_item_ranks_skip_models_without_full_sort_predict(caplog):
    import torch
    from recbole.data.interaction import Interaction

    from recbole_sracl.evaluation import test_item_ranks

    class PointwiseOnly(torch.nn.Module):
        def full_sort_predict(self, interaction):
            raise NotImplementedError

    split = _full_sort_split([(Interaction({"user_id": torch.tensor([1])}), None, torch.tensor([0]),
                               torch.tensor([1]))])
    with caplog.at_level("INFO"):
        assert test_item_ranks(PointwiseOnly(), split, 10) is None
    assert "PointwiseOnly has no full_sort_predict" in caplog.text


def test_item_ranks_say_why_a_split_has_no_group_metrics(caplog):
    import torch
    from recbole.data.interaction import Interaction

    from recbole_sracl.evaluation import test_item_ranks

    model = torch.nn.Module()
    with caplog.at_level("INFO"):
        assert test_item_ranks(model, [], 10) is None
    assert "no per-group test metrics: the test split is not full-ranking" in caplog.text
    two_items_for_user_1 = (Interaction({"user_id": torch.tensor([1])}), None, torch.tensor([0, 0]),
                            torch.tensor([1, 2]))
    caplog.clear()
    with caplog.at_level("INFO"):
        assert test_item_ranks(model, _full_sort_split([two_items_for_user_1]), 10) is None
    assert "no per-group test metrics: the test split must have exactly one test item per user" in caplog.text


def test_first_hit_ranks_read_a_top_k_hit_matrix():
    from recbole_sracl.evaluation import first_hit_ranks

    hits = np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])  # one 0/1 column per top-4 position
    assert first_hit_ranks(hits).tolist() == [1, 4, 0, 3]


def test_group_balanced_score_weighs_each_popularity_group_once():
    from recbole_sracl.evaluation import group_balanced_score

    ranks = np.array([0, 20, 20, 1])  # 20 = not in the top 20
    popularity = np.array([2, 30, 40, 3])  # groups <6 (ranks 0, 1) and >5 (both missed)
    rare = (1.0 + 1 / math.log2(3)) / 2
    assert group_balanced_score(ranks, popularity, [6], "NDCG@20", 4) == round(rare / 2, 4)
    assert group_balanced_score(ranks, popularity, [6], "Hit@20", 4) == 0.5
    assert group_balanced_score(ranks, popularity, [6], "MRR@20", 6) == round(0.75 / 2, 6)


def test_split_targets_keep_row_order_and_refuse_other_splits():
    import torch
    from recbole.data.interaction import Interaction

    from recbole_sracl.errors import ConfigError
    from recbole_sracl.evaluation import split_targets

    batches = [(Interaction({"user_id": torch.tensor([4, 2])}), None, torch.tensor([0, 1]), torch.tensor([7, 3])),
               (Interaction({"user_id": torch.tensor([9])}), None, torch.tensor([0]), torch.tensor([5]))]
    assert split_targets(_full_sort_split(batches)).tolist() == [7, 3, 5]
    with pytest.raises(ConfigError, match="needs a full-ranking validation split; set valid_metric_average: users"):
        split_targets(batches)
    two_items_for_user_4 = (Interaction({"user_id": torch.tensor([4])}), None, torch.tensor([0, 0]),
                            torch.tensor([7, 8]))
    with pytest.raises(ConfigError, match="exactly one validation item per user"):
        split_targets(_full_sort_split([two_items_for_user_4]))
