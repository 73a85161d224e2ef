"""Prompts (exact text, no leakage), retrieval against brute force, file round trips, manifest checks,
and the SRACL synthesizer."""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from recbole_sracl.config import Config
from recbole_sracl.errors import ConfigError, SemanticFilesError
from recbole_sracl.semantic import files
from recbole_sracl.semantic.prompts import PromptBuilder, clean_text, item_attributes, templates
from recbole_sracl.semantic.retrieval import brute_force_neighbours, recall_against, top_k_neighbours

ITEM_TEXT = {
    "a": {"title": "Blue  Pen", "brand": "Acme", "price": "2.50", "description": "nan"},
    "b": {"title": "Red Pen", "brand": "", "price": "", "description": "A   very long description " * 20},
    "c": {"title": "", "brand": "Bolt", "price": "10.0", "description": ""},
}
TYPES = {"title": "token_seq", "brand": "token", "price": "float", "description": "token_seq"}


def builder(**kwargs):
    histories = {"u1": ["a", "b", "c", "a"], "u2": ["b", "a"]}
    options = dict(max_user_items=3, item_contexts=10, context_length=3, field_chars=40, seed=1)
    options.update(kwargs)
    return PromptBuilder(ITEM_TEXT, TYPES, "title", ["title", "brand", "price", "description"], histories, **options)


def test_user_prompt_lists_recent_training_titles_and_skips_empty_ones():
    prompt = builder().user_prompt("u1")
    # last 3 training items are b, c, a; c has no title and is skipped
    assert prompt.message == "Red Pen; Blue Pen"
    assert "at most 100 words" in prompt.system and prompt.kind == "user" and prompt.token == "u1"


def test_item_prompt_has_attributes_without_empty_fields_and_training_contexts():
    prompt = builder().item_prompt("a", ["u1", "u2"])
    assert prompt.message == (
        "title: Blue Pen; brand: Acme; price: 2.5\n"
        "Interaction sequences containing this item:\n"
        "1. Blue Pen; Red Pen\n"
        "2. Red Pen; Blue Pen"
    )
    long = builder().item_prompt("b", ["u1"]).message.splitlines()[0]
    assert long == "title: Red Pen; description: A very long description A very long ..."
    assert "nan" not in builder().item_prompt("a", ["u1"]).message


def test_prefix_prompts_are_the_inputs_of_the_training_rows():
    prompts = builder().prefix_prompts()
    # u1's training part a b c a gives training rows with inputs a / a b / a b c (its last item is only a target)
    assert [(p.kind, p.token, p.message) for p in prompts] == [
        ("prefix", "u1:1", "Blue Pen"),
        ("prefix", "u1:2", "Blue Pen; Red Pen"),
        ("prefix", "u1:3", "Blue Pen; Red Pen"),  # c has no title
        ("prefix", "u2:1", "Red Pen"),
    ]
    assert prompts[0].system == builder().user_prompt("u1").system


def test_training_prefix_lengths_follow_row_order_per_user():
    from types import SimpleNamespace

    from recbole_sracl.data.sequences import training_prefix_lengths

    dataset = SimpleNamespace(uid_field="user_id", inter_feat={"user_id": torch.tensor([2, 1, 2, 2, 1, 3])})
    users, lengths = training_prefix_lengths(dataset)
    assert users.tolist() == [2, 1, 2, 2, 1, 3] and lengths.tolist() == [1, 1, 2, 3, 2, 1]


def test_clean_text_and_attributes():
    assert clean_text(float("nan")) == "" and clean_text(None) == "" and clean_text(" a \t b ") == "a b"
    assert item_attributes({"price": "10486.0"}, ["price"], {"price": "float"}, 100) == "price: 10486"


def test_templates_can_be_overridden_but_must_keep_placeholders():
    assert templates({"user_message": "Bought: {items}"})["user_message"] == "Bought: {items}"
    custom = builder(template_overrides={"user_message": "Bought: {items}"})
    assert custom.user_prompt("u2").message == "Bought: Red Pen; Blue Pen"
    with pytest.raises(ConfigError, match="must contain {items}"):
        templates({"user_message": "no placeholder"})
    with pytest.raises(ConfigError, match="unknown template"):
        templates({"usr_message": "{items}"})


def write_holdout_dataset(root: Path) -> Path:
    """Every user ends with two items nobody else has: they are the validation and test items."""
    from tiny_data import write_tiny_dataset

    folder = write_tiny_dataset(root, "holdout")
    lines = (folder / "holdout.inter").read_text().splitlines()
    last = {}
    for line in lines[1:]:
        user, item, position = line.split("\t")
        last[user] = max(last.get(user, 0), int(position))
    extra_items = []
    for user, position in last.items():
        for offset in (1, 2):
            item = f"h{user}x{offset}"
            lines.append(f"{user}\t{item}\t{position + offset}")
            extra_items.append(f"{item}\tHOLDOUT {user} {offset}\tSecret\tHeld Out\tnever seen in training")
    (folder / "holdout.inter").write_text("\n".join(lines) + "\n")
    with open(folder / "holdout.item", "a") as handle:
        handle.write("\n".join(extra_items) + "\n")
    return folder


def test_no_validation_or_test_item_reaches_any_prompt_or_neighbour_pool(tmp_path, tiny_yaml):
    from recbole_sracl.semantic.build import build_semantic_files

    write_holdout_dataset(tmp_path)
    config = Config("SASRec", "holdout", [str(tiny_yaml)], argv=[f"--data_path={tmp_path}", "--user_granularity=prefix"])
    manifest = build_semantic_files(config, show_progress=False, save_texts=True)
    folder = tmp_path / "holdout"
    texts = (folder / "holdout.semantic_texts.jsonl").read_text()
    assert "HOLDOUT" not in texts and "Secret" not in texts
    own_items = [line for line in (folder / "holdout.inter").read_text().splitlines()[1:] if "\th" not in line]
    # every user's own items are its training part; each but the first is the target of one training row
    assert manifest["counts"] == {"users": 60, "items": 40, "prefixes": len(own_items) - 60}
    for suffix in ("iemb", "inbr"):
        content = (folder / f"holdout.{suffix}").read_text()
        assert "\th" not in content and " h" not in content and not content.startswith("h")
    _, lists = files.read_neighbour_file(folder / "holdout.inbr", "inbr")
    assert all(not token.startswith("h") for row in lists for token in row)


def test_chunk_text_packs_whole_pieces_in_order():
    from recbole_sracl.semantic.encoder import chunk_text

    def words(pieces):
        return [len(piece.split()) for piece in pieces]

    text = "Red Pen; Blue Pen; Big Green Desk Lamp\n1. Ink; Paper"
    assert chunk_text(text, words, 4) == ["Red Pen; Blue Pen;", "Big Green Desk Lamp", "1. Ink; Paper"]
    assert chunk_text(text, words, 100) == ["Red Pen; Blue Pen; Big Green Desk Lamp 1. Ink; Paper"]
    assert chunk_text("one two three four five", words, 2) == ["one two three four five"]  # one piece: the encoder truncates


def test_chunk_mean_encodes_what_truncation_drops():
    from recbole_sracl.semantic.encoder import SentenceEncoder

    encoder = SentenceEncoder()
    short, long = "Red Pen; Blue Pen", "; ".join(f"Acme Stapler Model {n}" for n in range(60)) + "; Bolt Ink Cartridge"
    # a text that fits the window is encoded exactly as before
    assert np.allclose(encoder.encode([short], False, long_text="chunk_mean"), encoder.encode([short], False), atol=1e-6)
    truncated, chunked = encoder.encode([long], False), encoder.encode([long], False, long_text="chunk_mean")
    ink = encoder.encode(["Bolt Ink Cartridge"], False)
    # the last item lies beyond the 256-token window: truncation ignores it, the chunk mean does not
    assert (chunked @ ink.T).item() > (truncated @ ink.T).item() + 0.02
    assert np.isclose(np.linalg.norm(chunked), 1.0, atol=1e-5)
    with pytest.raises(Exception, match="semantic_long_text must be one of"):
        encoder.encode([short], False, long_text="summarise")


def test_faiss_exact_retrieval_equals_brute_force():
    vectors = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    assert np.array_equal(top_k_neighbours(vectors, 10), brute_force_neighbours(vectors, 10))
    assert top_k_neighbours(vectors, 1000).shape == (300, 299)  # k is capped at the pool size - 1


def test_retrieval_excludes_self_even_with_identical_vectors():
    vectors = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    result = top_k_neighbours(vectors, 2)
    for row, neighbours in enumerate(result):
        assert row not in neighbours and len(set(neighbours)) == 2
    assert set(result[0]) == {1, 2}


def test_approximate_indexes_have_high_recall():
    vectors = np.random.default_rng(1).normal(size=(2000, 32)).astype(np.float32)
    exact = brute_force_neighbours(vectors, 10)
    assert recall_against(exact, top_k_neighbours(vectors, 10, "hnsw")) > 0.9
    assert recall_against(exact, top_k_neighbours(vectors, 10, "ivf")) > 0.6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"llm": "gpt"}, "--llm must be one of ('none', 'openai'), got 'gpt'"),
        ({"long_text": "wrap"}, "--long_text must be one of ('truncate', 'chunk_mean'), got 'wrap'"),
        ({"user_granularity": "session"}, "--user_granularity must be one of ('user', 'prefix'), got 'session'"),
    ],
)
def test_semantic_choices_are_refused_with_their_allowed_values(options, message):
    from recbole_sracl.semantic.build import BuildOptions

    with pytest.raises(ConfigError) as caught:
        BuildOptions(**options).validate()
    assert str(caught.value) == message


def test_unknown_faiss_index_is_refused_with_the_allowed_values():
    vectors = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"semantic_index must be one of \('flat', 'hnsw', 'ivf'\), got 'lsh'"):
        top_k_neighbours(vectors, 1, "lsh")


def test_embedding_and_neighbour_files_round_trip(tmp_path):
    vectors = np.random.default_rng(2).normal(size=(5, 7)).astype(np.float32)
    files.write_embedding_file(tmp_path / "x.uemb", "uemb", list("abcde"), vectors)
    tokens, read = files.read_embedding_file(tmp_path / "x.uemb", "uemb", 7)
    assert tokens == list("abcde") and np.allclose(read, vectors, rtol=1e-6, atol=0)
    assert (tmp_path / "x.uemb").read_text().splitlines()[0] == "uemb_id:token\tuemb:float_seq"
    files.write_neighbour_file(tmp_path / "x.unbr", "unbr", ["a", "b"], [["b"], ["a"]])
    assert (tmp_path / "x.unbr").read_text() == "unbr_id:token\tunbr:token_seq\na\tb\nb\ta\n"
    assert files.read_neighbour_file(tmp_path / "x.unbr", "unbr") == (["a", "b"], [["b"], ["a"]])


def test_recbole_loads_the_files_aligned_with_its_internal_ids(semantic_copy, tiny_yaml):
    from recbole_sracl.data.sequences import neighbour_table
    from recbole_sracl.data.utils import create_dataset
    from recbole_sracl.model.sracl import SRACL
    from recbole_sracl.quick_start import build_config

    config = build_config("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(semantic_copy))
    SRACL.prepare_config(config)
    dataset = create_dataset(config)
    train, _, _ = dataset.build()
    folder = semantic_copy / "tiny"
    tokens, vectors = files.read_embedding_file(folder / "tiny.uemb", "uemb")
    weights = train.get_preload_weight("uemb_id")
    ids = train.token2id("user_id", tokens)
    assert np.allclose(weights[ids], vectors) and not weights[0].any()
    table, counts = neighbour_table(train, "unbr", train.user_num, 5)
    nbr_tokens, lists = files.read_neighbour_file(folder / "tiny.unbr", "unbr")
    for token, row in zip(nbr_tokens, lists):
        internal = table[train.token2id("user_id", token)]
        assert train.id2token("user_id", internal.numpy()).tolist() == row[:5]
    assert int(counts[1:].min()) == 5


def test_prefix_tables_follow_the_training_rows(semantic_copy, tiny_yaml):
    from recbole_sracl.data.utils import create_dataset, data_preparation
    from recbole_sracl.model.sracl import SRACL
    from recbole_sracl.quick_start import build_config

    config = build_config("SRACL", "tiny", [str(tiny_yaml)],
                          argv=tiny_overrides(semantic_copy, "--user_granularity=prefix", "--k=4"))
    SRACL.prepare_config(config)
    train, _, _ = data_preparation(config, create_dataset(config), SRACL.build_train_augmenter)
    model = SRACL(config, train._dataset)
    features = train._dataset.inter_feat
    folder = semantic_copy / "tiny"
    tokens, vectors = files.read_embedding_file(folder / "tiny.pemb", "pemb")
    _, lists = files.read_neighbour_file(folder / "tiny.pnbr", "pnbr")
    users = train._dataset.id2token("user_id", features["user_id"].numpy())
    seen: dict[str, int] = {}
    row_of = {}
    for row, user in enumerate(users):  # rows of a user are chronological: its n-th row has a prefix of n items
        seen[user] = seen.get(user, 0) + 1
        row_of[f"{user}:{seen[user]}"] = row
    assert sorted(row_of) == sorted(tokens) and len(model.anchor_semantic) == len(tokens) + 1
    for token, vector, neighbours in list(zip(tokens, vectors, lists))[::37]:
        anchor = row_of[token] + 1
        assert torch.allclose(model.anchor_semantic[anchor], torch.as_tensor(vector, dtype=torch.float32))
        assert torch.equal(model.anchor_sequences[anchor], features["item_id_list"][row_of[token]])
        assert model.anchor_neighbours[anchor].tolist() == [row_of[name] + 1 for name in neighbours[:4]]
    batch = next(iter(train))
    assert torch.equal(batch["item_id_list"], model.anchor_sequences[batch["train_row"] + 1])
    assert all(torch.isfinite(loss) for loss in model.calculate_loss(batch))
    # the ablation keeps, in order, the first k neighbours that belong to another user
    others = SRACL(build_config("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(
        semantic_copy, "--user_granularity=prefix", "--k=4", "--prefix_same_user=False")), train._dataset)
    for token, neighbours in list(zip(tokens, lists))[::37]:
        user = token.rsplit(":", 1)[0]
        expected = [row_of[name] + 1 for name in neighbours if name.rsplit(":", 1)[0] != user][:4]
        assert others.anchor_neighbours[row_of[token] + 1].tolist() == expected


def test_stale_files_are_refused_with_the_rebuild_command(semantic_copy, tiny_yaml):
    config = Config("SRACL", "tiny", [str(tiny_yaml)], argv=[f"--data_path={semantic_copy}"])
    files.check_semantic_files(config, ["uemb", "unbr", "inbr"])
    inter = semantic_copy / "tiny" / "tiny.inter"
    lines = inter.read_text().splitlines()
    lines[5] = lines[5].replace("\ti", "\ti1", 1)  # edit one interaction
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(SemanticFilesError, match="stale semantic files.*tiny.inter changed.*semantic build --dataset=tiny"):
        files.check_semantic_files(config, ["uemb"])


def test_files_built_with_another_filter_or_for_another_dataset_are_refused(semantic_copy, tiny_yaml):
    other = Config("SRACL", "tiny", [str(tiny_yaml)],
                   argv=[f"--data_path={semantic_copy}", "--item_inter_num_interval=[2,inf)"])
    with pytest.raises(SemanticFilesError, match="setting item_inter_num_interval"):
        files.check_semantic_files(other, ["uemb"])
    shutil.copytree(semantic_copy / "tiny", semantic_copy / "tiny2")
    for path in (semantic_copy / "tiny2").iterdir():
        path.rename(path.with_name(path.name.replace("tiny.", "tiny2.")))
    config = Config("SRACL", "tiny2", [str(tiny_yaml)], argv=[f"--data_path={semantic_copy}"])
    with pytest.raises(SemanticFilesError, match="built for dataset 'tiny', not 'tiny2'"):
        files.check_semantic_files(config, ["uemb"])


def test_synthesizer_weights(semantic_copy, tiny_yaml):
    from recbole_sracl.data.utils import create_dataset, data_preparation
    from recbole_sracl.model.sracl import SRACL
    from recbole_sracl.quick_start import build_config

    def model_with(*extra):
        config = build_config("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(semantic_copy, "--k=4", *extra))
        SRACL.prepare_config(config)
        train, _, _ = data_preparation(config, create_dataset(config), SRACL.build_train_augmenter)
        return SRACL(config, train._dataset)

    model = model_with()
    assert tuple(model.adapter.shape) == (384, 64) and tuple(model.attention.shape) == (128, 1)
    users = torch.tensor([1, 2, 3])
    neighbours = model.anchor_neighbours[users].clone()
    neighbours[0, 3] = 0  # a padding candidate
    model.eval()  # no dropout on the weights
    weights = model.synthesis_weights(users, neighbours)
    assert weights.shape == (3, 4) and weights[0, 3] == 0
    assert torch.allclose(weights.sum(1), torch.ones(3))
    # the weights follow the formula softmax(LeakyReLU(a^T [W e_u || W e_u']))
    semantic = model.anchor_semantic
    projected_user = semantic[users] @ model.adapter
    projected_nbr = semantic[neighbours] @ model.adapter
    scores = torch.cat([projected_user.unsqueeze(1).expand(-1, 4, -1), projected_nbr], -1) @ model.attention
    scores = torch.nn.functional.leaky_relu(scores.squeeze(-1), 0.2).masked_fill(neighbours == 0, float("-inf"))
    assert torch.allclose(weights, torch.softmax(scores, 1), atol=1e-6)
    model.train()
    loss = model.cross_sequence_loss(users, torch.randn(3, 64))
    loss.backward()
    assert model.adapter.grad is not None and model.attention.grad.abs().sum() > 0

    uniform = model_with("--synthesizer=uniform").synthesis_weights(users, neighbours)
    assert torch.equal(uniform.sum(1), torch.ones(3)) and set(uniform.unique().tolist()) == {0.0, 1.0}
    assert uniform[0, 3] == 0
    mean = model_with("--synthesizer=mean").synthesis_weights(users, neighbours)
    assert torch.allclose(mean[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))


def test_manifest_records_what_produced_the_files(semantic_root):
    manifest = json.loads((semantic_root / "tiny" / "tiny.semantic.json").read_text())
    assert manifest["options"]["llm"] == {"provider": "none"} and manifest["dimension"] == 384
    assert manifest["k"] == {"users": 59, "items": 39, "prefixes": 100}
    assert "tiny.inter" in manifest["fingerprint"]["files"] and manifest["options"]["user_granularity"] == "prefix"
    assert set(manifest["files"]) == {"tiny.uemb", "tiny.iemb", "tiny.unbr", "tiny.inbr", "tiny.pemb", "tiny.pnbr"}
    assert manifest["files"]["tiny.pemb"]["rows"] == manifest["counts"]["prefixes"]
    # the encoder's exact floats depend on the CPU and library versions, so the manifest names them
    versions = manifest["machine"]["versions"]
    assert versions["sentence-transformers"] == metadata.version("sentence-transformers")
    assert versions["faiss-cpu"] == metadata.version("faiss-cpu") and manifest["machine"]["cpu_model"]
