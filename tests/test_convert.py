"""The Amazon 2014 converter on a small raw fixture written by the test."""

import gzip
import json

from recbole_sracl.data.convert import main


def write_fixture(folder):
    reviews = []
    # users A..E review items p1..p5 (5-core survives); user Z has 2 reviews and item p9 one: both dropped
    for u_index, user in enumerate("ABCDE"):
        for i_index in range(5):
            reviews.append({"reviewerID": user, "asin": f"p{(i_index + u_index) % 5 + 1}",
                            "unixReviewTime": 1000 + 10 * i_index, "overall": 5.0})
    reviews.append({"reviewerID": "A", "asin": "p9", "unixReviewTime": 5})
    reviews += [{"reviewerID": "Z", "asin": "p1", "unixReviewTime": 1}, {"reviewerID": "Z", "asin": "p2", "unixReviewTime": 2}]
    # a tie for user B: same time as its first review; file order must be kept
    reviews.insert(5, {"reviewerID": "B", "asin": "p1", "unixReviewTime": 1000})
    with gzip.open(folder / "reviews.json.gz", "wt") as handle:
        for review in reviews:
            handle.write(json.dumps(review) + "\n")
    meta = [
        {"asin": "p1", "title": "Fancy &amp; Pen\twith \"quotes\"", "brand": "Acme",
         "categories": [["Office Products", "Pens"], ["Other"]], "price": 2.5, "salesRank": {"Office Products": 123}},
        {"asin": "p2", "title": "Paper", "description": "Line one\nline two &lt;b&gt;"},
        {"asin": "p9", "title": "Dropped item"},
    ]
    with gzip.open(folder / "meta.json.gz", "wt") as handle:
        for record in meta:
            handle.write(repr(record) + "\n")  # the 2014 metadata is Python literals, not JSON


def test_amazon_converter_filters_orders_and_cleans(tmp_path, capsys):
    write_fixture(tmp_path)
    code = main(["amazon", "--reviews", str(tmp_path / "reviews.json.gz"), "--meta", str(tmp_path / "meta.json.gz"),
                 "--out", str(tmp_path / "out" / "Amazon_Test")])
    assert code == 0
    inter = (tmp_path / "out" / "Amazon_Test" / "Amazon_Test.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\ttimestamp:float"
    rows = [line.split("\t") for line in inter[1:]]
    assert {row[0] for row in rows} == set("ABCDE") and {row[1] for row in rows} == {f"p{i}" for i in range(1, 6)}
    user_b = [row[1] for row in rows if row[0] == "B"]
    assert user_b == ["p1", "p2", "p3", "p4", "p5", "p1"]  # time order; the tie at 1000 keeps file order
    assert [row[2] for row in rows if row[0] == "B"] == ["1", "2", "3", "4", "5", "6"]
    item = (tmp_path / "out" / "Amazon_Test" / "Amazon_Test.item").read_text().splitlines()
    assert item[0].split("\t")[:4] == ["item_id:token", "title:token_seq", "brand:token", "categories:token_seq"]
    p1 = dict(zip([h.split(":")[0] for h in item[0].split("\t")], item[1].split("\t")))
    assert p1 == {"item_id": "p1", "title": "Fancy & Pen with ''quotes''", "brand": "Acme",
                  "categories": "Office Products, Pens", "price": "2.5", "sales_type": "Office Products",
                  "sales_rank": "123", "description": ""}
    p2 = dict(zip([h.split(":")[0] for h in item[0].split("\t")], item[2].split("\t")))
    assert p2["description"] == "Line one line two <b>" and p2["brand"] == ""
    assert len(item) == 6  # header + p1..p5 (p3..p5 without metadata get empty text)
    assert "5 users, 5 items, 26 interactions" in capsys.readouterr().out


def test_converter_output_loads_in_recbole(tmp_path):
    from recbole_sracl.config import Config
    from recbole_sracl.data.utils import create_dataset

    write_fixture(tmp_path)
    main(["amazon", "--reviews", str(tmp_path / "reviews.json.gz"), "--meta", str(tmp_path / "meta.json.gz"),
          "--out", str(tmp_path / "Amazon_Test")])
    config = Config("SASRec", "Amazon_Test", argv=[f"--data_path={tmp_path}",
                                                     "--load_col={'inter': ['user_id', 'item_id', 'timestamp'], "
                                                     "'item': ['item_id', 'title', 'brand', 'categories', 'price']}"])
    dataset = create_dataset(config)
    assert dataset.user_num == 6 and dataset.item_num == 6 and dataset.inter_num == 26


def test_missing_raw_file_is_a_clear_error(tmp_path, capsys):
    assert main(["amazon", "--reviews", str(tmp_path / "nope.json.gz"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.json.gz not found" in capsys.readouterr().err
