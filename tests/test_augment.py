"""Exact-value tests of the batch augmentations (crop, mask, reorder, CL4SRec views, substitution, same target)."""

import pytest
import torch

from recbole_sracl.data import augment

SEQ = torch.tensor([[1, 2, 3, 4, 5, 0, 0], [6, 7, 0, 0, 0, 0, 0]])
LEN = torch.tensor([5, 2])


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_keeps_a_contiguous_window_of_floor_eta_len():
    seen = set()
    for seed in range(50):
        out, length = augment.crop(SEQ, LEN, 0.6, generator(seed))
        assert length.tolist() == [3, 1]
        window = tuple(out[0, :3].tolist())
        assert window in {(1, 2, 3), (2, 3, 4), (3, 4, 5)}
        assert out[0, 3:].tolist() == [0, 0, 0, 0]
        assert out[1].tolist() in ([6, 0, 0, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0, 0])
        seen.add(window)
    assert len(seen) == 3  # every start offset is reachable


def test_crop_exact_for_fixed_draw():
    # the offset is floor(u * (len - keep + 1)) with u the generator's first float64 draw
    u = torch.rand(2, generator=generator(3), dtype=torch.float64)
    begin = int(u[0] * 3)
    out, _ = augment.crop(SEQ, LEN, 0.6, generator(3))
    assert out[0, :3].tolist() == SEQ[0, begin:begin + 3].tolist()


def test_mask_replaces_exactly_floor_gamma_len_distinct_items():
    for seed in range(30):
        out, length = augment.mask(SEQ, LEN, 0.4, mask_token=99, generator=generator(seed))
        assert length.tolist() == [5, 2]
        assert int((out[0] == 99).sum()) == 2  # floor(5 * 0.4)
        assert int((out[1] == 99).sum()) == 0  # floor(2 * 0.4)
        kept = out[0][out[0] != 99]
        assert set(kept.tolist()) <= {1, 2, 3, 4, 5, 0}
        assert out[0, 5:].tolist() == [0, 0]  # padding is never masked


def test_reorder_permutes_one_contiguous_segment_only():
    for seed in range(30):
        out, length = augment.reorder(SEQ, LEN, 0.6, generator(seed))
        assert length.tolist() == [5, 2]
        assert sorted(out[0, :5].tolist()) == [1, 2, 3, 4, 5]
        assert out[0, 5:].tolist() == [0, 0]
        changed = (out[0] != SEQ[0]).nonzero().flatten().tolist()
        if changed:
            assert max(changed) - min(changed) < 3  # floor(5 * 0.6) = 3 consecutive positions
        assert out[1].tolist() == [6, 7, 0, 0, 0, 0, 0]  # floor(2 * 0.6) = 1: nothing to shuffle


def test_reorder_with_beta_one_reaches_every_permutation_of_a_short_sequence():
    seq, length = torch.tensor([[1, 2, 3, 0]]), torch.tensor([3])
    outcomes = {tuple(augment.reorder(seq, length, 1.0, generator(seed))[0][0, :3].tolist()) for seed in range(200)}
    assert len(outcomes) == 6


def test_cl4srec_views_use_two_different_operators_and_skip_length_one_rows():
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [4, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    length = torch.tensor([10, 1])
    for seed in range(30):
        (first, first_len), (second, second_len) = augment.cl4srec_views(seq, length, generator(seed), mask_token=50)
        assert first[1].tolist() == seq[1].tolist() and second[1].tolist() == seq[1].tolist()
        assert first_len[1] == second_len[1] == 1

        def kind(view, view_len):
            if view_len[0] == 6:
                return "crop"
            if (view[0] == 50).any():
                return "mask"
            return "reorder"

        assert kind(first, first_len) != kind(second, second_len)


def test_augmentations_never_modify_their_inputs():
    seq, length = SEQ.clone(), LEN.clone()
    g = generator(0)
    augment.crop(seq, length, 0.6, g)
    augment.mask(seq, length, 0.5, 9, g)
    augment.reorder(seq, length, 0.6, g)
    augment.cl4srec_views(seq, length, g, mask_token=9)
    augment.substitute(seq, length, torch.zeros((10, 2), dtype=torch.long), torch.zeros(10, dtype=torch.long), 1.0, g)
    assert torch.equal(seq, SEQ) and torch.equal(length, LEN)


def test_substitute_rate_one_with_single_neighbour_is_exact():
    neighbours = torch.zeros((10, 3), dtype=torch.long)
    counts = torch.zeros(10, dtype=torch.long)
    for item, neighbour in {1: 8, 2: 9, 3: 8, 4: 9, 5: 8, 6: 8, 7: 9}.items():
        neighbours[item, 0], counts[item] = neighbour, 1
    out = augment.substitute(SEQ, LEN, neighbours, counts, 1.0, generator(0))
    assert out.tolist() == [[8, 9, 8, 9, 8, 0, 0], [8, 9, 0, 0, 0, 0, 0]]


def test_substitute_rate_zero_and_items_without_neighbours_are_kept():
    neighbours = torch.tensor([[0, 0]] * 8 + [[1, 2]] * 2)
    counts = (neighbours > 0).sum(1)
    assert torch.equal(augment.substitute(SEQ, LEN, neighbours, counts, 0.0, generator(0)), SEQ)
    assert torch.equal(augment.substitute(SEQ, LEN, neighbours, counts, 1.0, generator(0)), SEQ)


def test_substitute_draws_only_valid_neighbours_at_about_the_rate():
    neighbours = torch.zeros((8, 3), dtype=torch.long)
    neighbours[1] = torch.tensor([5, 6, 0])  # two valid neighbours, then padding
    counts = (neighbours > 0).sum(1)
    seq = torch.ones((2000, 5), dtype=torch.long)
    length = torch.full((2000,), 5)
    out = augment.substitute(seq, length, neighbours, counts, 0.2, generator(1))
    assert set(out.unique().tolist()) == {1, 5, 6}
    rate = float((out != 1).float().mean())
    assert 0.18 < rate < 0.22
    assert abs(float((out == 5).float().mean()) - float((out == 6).float().mean())) < 0.02


def test_random_pool_exact_for_two_real_items():
    # ids 1 and 2 are the only real items: each one's only other item is the other
    table, counts = augment.random_pool(3, 4, generator(0))
    assert table.tolist() == [[0, 0, 0, 0], [2, 2, 2, 2], [1, 1, 1, 1]]
    assert counts.tolist() == [0, 4, 4]


def test_random_pool_is_seeded_uniform_over_the_other_items_and_never_self():
    table, counts = augment.random_pool(51, 400, generator(3))
    assert torch.equal(table, augment.random_pool(51, 400, generator(3))[0])
    assert not torch.equal(table, augment.random_pool(51, 400, generator(4))[0])
    items = torch.arange(51).unsqueeze(1)
    assert (table[1:] != items[1:]).all() and (table[1:] >= 1).all() and (table[1:] <= 50).all()
    assert (table[0] == 0).all() and counts[0] == 0 and (counts[1:] == 400).all()
    frequency = torch.bincount(table[1:].flatten(), minlength=51)[1:].float() / (50 * 400)
    assert float((frequency - 1 / 50).abs().max()) < 0.004  # every real item drawn about equally often


def test_random_pool_without_two_real_items_is_empty():
    for n_items in (1, 2):
        table, counts = augment.random_pool(n_items, 3, generator(0))
        assert table.shape == (n_items, 3) and not table.any() and not counts.any()


def test_cooccurrence_pool_exact_cosine_ranking():
    import numpy as np

    # user 4 buys item 2 twice: a repeated purchase counts once; item 6 is never bought
    histories = {1: np.array([1, 2, 3]), 2: np.array([1, 2]), 3: np.array([3, 4]), 4: np.array([2, 2, 5])}
    table, counts = augment.cooccurrence_pool(histories, 7, 2, block_rows=3)  # blocks of 3 rows: 0-2, 3-5, 6
    # cosine = shared buyers / sqrt(buyers_i * buyers_j); buyers: 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 1, 5 -> 1
    # item 2: 1 (2/sqrt(6) = .816) > 5 (1/sqrt(3) = .577) > 3 (1/sqrt(6) = .408); item 3: 4 (.707) > 1 (.5) > 2
    assert table.tolist() == [[0, 0], [2, 3], [1, 5], [4, 1], [3, 0], [2, 0], [0, 0]]
    assert counts.tolist() == [0, 2, 2, 2, 1, 1, 0]


def test_cooccurrence_pool_breaks_ties_by_id_and_never_holds_the_item_itself():
    import numpy as np

    table, counts = augment.cooccurrence_pool({7: np.array([3, 1, 2])}, 4, 5)  # k larger than the item count
    assert table.tolist() == [[0, 0, 0, 0, 0], [2, 3, 0, 0, 0], [1, 3, 0, 0, 0], [1, 2, 0, 0, 0]]
    assert counts.tolist() == [0, 2, 2, 2]


def test_buyers_by_item_turns_histories_around_and_feeds_user_cooccurrence():
    import numpy as np

    from recbole_sracl.data.sequences import buyers_by_item

    # user 4 buys item 2 twice (listed once); item 6 is bought by nobody (absent)
    histories = {1: np.array([1, 2, 3]), 2: np.array([1, 2]), 3: np.array([3, 4]), 4: np.array([2, 2, 5])}
    buyers = buyers_by_item(histories)
    assert buyers == {
        1: [1, 2], 2: [1, 2, 4], 3: [1, 3], 4: [3], 5: [4]}
    assert buyers_by_item({}) == {}
    # user-user cosine over items: items per user 1 -> 3, 2 -> 2, 3 -> 2, 4 -> 2 (2 and 5)
    # user 1: 2 (2 shared / sqrt(6) = .816) > 3 and 4 (1/sqrt(6) = .408, tie -> smaller id); user 3: only 1 shares
    table, counts = augment.cooccurrence_pool(buyers, 5, 2)
    assert table.tolist() == [[0, 0], [2, 3], [1, 4], [1, 0], [2, 1]]
    assert counts.tolist() == [0, 2, 2, 1, 2]


def test_same_target_partner_has_the_same_target_and_is_another_row():
    targets = torch.tensor([7, 3, 7, 5, 3, 7])
    index = augment.same_target_index(targets)
    rows = torch.arange(6)
    seen = {row: set() for row in range(6)}
    for seed in range(40):
        partner = augment.sample_same_target(rows, generator=generator(seed), **index)
        assert torch.equal(targets[partner], targets)
        for row, other in enumerate(partner.tolist()):
            seen[row].add(other)
    assert seen[3] == {3}  # target 5 occurs once: the row itself
    assert seen[0] == {2, 5} and seen[2] == {0, 5} and seen[1] == {4}


def test_info_nce_exact_values():
    import math

    from recbole_sracl.model.layers import info_nce

    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 2.0]])

    def nll(positive_logit, *negative_logits):
        return -positive_logit + math.log(sum(math.exp(x) for x in (positive_logit, *negative_logits)))

    # SRA-CL eq. (10): anchor i against positive i and the other N-1 positives
    batch = (nll(1, 0) + nll(2, 0)) / 2
    assert math.isclose(info_nce(anchor, positive, negatives="batch").item(), batch, rel_tol=1e-6)
    # temperature divides every logit
    halved = (nll(2, 0) + nll(4, 0)) / 2
    assert math.isclose(info_nce(anchor, positive, 0.5, negatives="batch").item(), halved, rel_tol=1e-6)
    # cosine: positive[1] is normalised to [0, 1]
    assert math.isclose(info_nce(anchor, positive, similarity="cos", negatives="batch").item(),
                        nll(1, 0), rel_tol=1e-6)
    # symmetric (CL4SRec/DuoRec, SRA-CL eq. 14): each of the 2N vectors against its partner and the other 2N-2
    symmetric = (nll(1, 0, 0) + nll(2, 0, 0) + nll(1, 0, 0) + nll(2, 0, 0)) / 4
    assert math.isclose(info_nce(anchor, positive).item(), symmetric, rel_tol=1e-6)
    with pytest.raises(ValueError, match="similarity must be one of"):
        info_nce(anchor, positive, similarity="l2")
