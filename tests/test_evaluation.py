"""The offline evaluation table: rows, floors, formats."""

import csv
import json

import pytest
import torch
from model_zoo import tiny_vit

from lightning_rollout import explain
from lightning_rollout.evaluation.table import COLUMNS, FLOORS, evaluate, format_markdown, save_table
from lightning_rollout.metrics import saco


def test_evaluate_rows_with_and_without_masks(tmp_path):
    model = tiny_vit()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    rows = evaluate(model, images, labels, masks, methods=["rollout", "chefer"], steps=4, chunk_size=4)
    assert [row["name"] for row in rows] == ["rollout", "chefer", *FLOORS]
    for row in rows:
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert 0 <= row["energy"] <= 1 and 0 <= row["pointing_game"] <= 1
        assert -1 <= row["saco"] <= 1
        assert (row["randomisation"] is None) == (row["name"] in FLOORS)
    uniform = rows[-1]
    assert abs(uniform["energy"] - 0.25) < 1e-6 and uniform["pointing_game"] == 0  # no peak, energy = area
    assert uniform["saco"] == 0  # a constant map ranks no group above another
    # the saco column is SaCo's mean over the samples, whatever the chunks
    chefer = explain(model, images, "chefer", target=labels)
    assert rows[1]["saco"] == pytest.approx(float(saco(model, images, chefer, labels, groups=10).mean()), abs=1e-5)
    five = evaluate(model, images, labels, masks, methods=["chefer"], steps=4, saco_groups=5)
    assert five[0]["saco"] == pytest.approx(float(saco(model, images, chefer, labels, groups=5).mean()), abs=1e-5)
    off = evaluate(model, images, labels, None, methods=["rollout"], steps=4, saco_groups=0)
    assert all(row["saco"] is None for row in off)
    with pytest.raises(ValueError, match=r"`saco_groups` must be 0 \(SaCo off\) or an int >= 2"):
        evaluate(model, images, labels, methods=["rollout"], saco_groups=1)
    for row in rows[:2]:
        assert -1 <= row["randomisation"] <= 1

    predicted = evaluate(model, images, None, None, methods=["rollout"], steps=4)
    assert predicted[0]["energy"] is None and predicted[0]["pointing_game"] is None
    with torch.no_grad():
        labels_predicted = model(images).argmax(dim=-1)
    assert predicted == evaluate(model, images, labels_predicted, None, methods=["rollout"], steps=4)

    table = format_markdown(predicted)
    assert table.splitlines()[0].startswith("| method | deletion AUC ↓ | insertion AUC ↑ | SaCo ↑ |")
    assert "| rollout | " in table and "—" in table
    paths = save_table(rows, str(tmp_path), {"steps": 4})
    assert json.load(open(paths["json"]))["rows"] == rows
    with open(paths["csv"]) as handle:
        assert next(csv.reader(handle)) == ["name", *COLUMNS]
