"""The task logic: argument checks, label checks, scores, panels, captions, per-panel masks, discrimination."""

import pytest
import torch

from lightning_rollout.monitor import tasks
from lightning_rollout.monitor.captions import captions
from lightning_rollout.monitor.scalars import discrimination
from lightning_rollout.targets import RegressionOutput


def test_class_scores_per_task():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    softmax, sigmoid = tasks.class_scores("multiclass", logits), tasks.class_scores("multilabel", logits)
    assert torch.allclose(softmax, torch.tensor([[0.5, 0.5], [0.8808, 0.1192]]), atol=1e-4)
    assert torch.allclose(sigmoid, torch.tensor([[0.5, 0.5], [0.8808, 0.5]]), atol=1e-4)
    assert tasks.class_scores("none", logits) is None
    with pytest.raises(ValueError, match=r"`task`='multilabel' needs an output of class scores \(B, num_classes\)"):
        tasks.class_scores("multilabel", torch.zeros(2))


def test_multiclass_panels_one_per_sample():
    labels = torch.tensor([2, 0])
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    by_label = tasks.panels("multiclass", "label", 2, labels, scores, 2)
    assert by_label.samples.tolist() == [0, 1] and by_label.classes.tolist() == [2, 0]
    by_prediction = tasks.panels("multiclass", "prediction", 2, labels, None, 2)
    assert by_prediction.classes is None and by_prediction.target("prediction", torch.device("cpu")) is None
    assert by_prediction.with_predictions(scores).classes.tolist() == [1, 0]
    assert by_label.with_predictions(scores) is by_label
    assert captions("multiclass", by_label, labels, scores, None, ["a", "b", "c"]) == [
        ["true: c", "pred: b (0.70)"],
        ["true: a", "pred: a (0.60)"],
    ]


def test_multilabel_panels_per_positive_label_with_cap():
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    scores = torch.tensor([[0.9, 0.2, 0.6, 0.3], [0.1, 0.8, 0.7, 0.05]])
    result = tasks.panels("multilabel", "label", 2, labels, scores, 2)
    assert result.samples.tolist() == [0, 0, 1] and result.classes.tolist() == [0, 2, 1]
    assert result.target("label", torch.device("cpu")).tolist() == [0, 2, 1]
    names = ["red", "green", "blue", "yellow"]
    assert captions("multilabel", result, labels, scores[result.samples], None, names) == [
        ["red (0.90)", "true: red, blue, yellow"],
        ["blue (0.60)", "true: red, blue, yellow"],
        ["green (0.80)", "true: green"],
    ]
    # Prediction: each sample's two highest-scoring classes, highest first.
    predicted = tasks.panels("multilabel", "prediction", 2, labels, scores, 2)
    assert predicted.samples.tolist() == [0, 0, 1, 1] and predicted.classes.tolist() == [0, 2, 1, 2]


def test_label_free_and_callable_panels():
    target = RegressionOutput()
    result = tasks.panels("none", target, 3, None, None, 2)
    assert result.samples.tolist() == [0, 1, 2] and result.classes is None
    assert result.target(target, torch.device("cpu")) is target
    assert tasks.panels("none", "label", 3, None, None, 2).target("label", torch.device("cpu")) is None
    assert captions("none", result, None, None, torch.tensor([0.5, -1.25, 3.0])) == [
        ["target: 0.5"],
        ["target: -1.25"],
        ["target: 3"],
    ]
    assert captions("none", result, None, None, None) == [[], [], []]
    with pytest.raises(ValueError, match=r"captions of `task`='multiclass' need the class scores"):
        captions("multiclass", result, None, None, None)


def test_panel_masks():
    masks = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    masks[0, 1, 0, 0] = True
    masks[1, 2, 3, 3] = True
    result = tasks.Panels(torch.tensor([0, 1, 1]), torch.tensor([1, 2, 0]))
    own = tasks.panel_masks(masks, result)
    assert own.shape == (3, 4, 4)
    assert own[0, 0, 0] and own[1, 3, 3] and not own[2].any()
    single = masks.any(dim=1)
    assert torch.equal(tasks.panel_masks(single, result), single[[0, 1, 1]])
    assert tasks.panel_masks(masks, tasks.Panels(torch.tensor([0]), None)) is None
    assert tasks.panel_masks(None, result) is None


def test_discrimination_over_panels_with_another_class():
    # Two 4 x 4 scenes on a 2 x 2 grid. Scene 0: class 0 top-left, class 2 bottom-right. Scene 1: class 1 only.
    masks = torch.zeros(2, 3, 4, 4)
    masks[0, 0, :2, :2] = 1
    masks[0, 2, 2:, 2:] = 1
    masks[1, 1, :2, :2] = 1
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    result = tasks.Panels(torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]))
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    # Panel 0 explains class 0 and looks at it: 1; panel 1 explains class 2 but looks at class 0: 0; panel 2's
    # scene has one class, so it does not count.
    assert discrimination(maps, masks, labels, result) == 0.5
    maps[1] = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert discrimination(maps, masks, labels, result) == 1.0
    assert discrimination(maps, masks.amax(dim=1), labels, result) is None
    assert discrimination(maps[2:], masks, labels, tasks.Panels(torch.tensor([1]), torch.tensor([1]))) is None


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("multi", "label", ["rollout"], 2), r"`task` must be one of \['multiclass', 'multilabel', 'none'\], got"),
        (("multiclass", "logit", ["rollout"], 2), r"`target` must be one of \['label', 'prediction'\] or a callable"),
        (("multilabel", "label", ["rollout"], 0), "`max_labels` must be an int >= 1, got 0"),
        (("none", "label", ["rollout", "chefer"], 2), r"`task`='none' has no classes, so the gradient methods \['che"),
    ],
)
def test_check_task_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        tasks.check_task(*arguments)


def test_check_task_accepts_label_free_methods_and_callable_targets():
    tasks.check_task("none", "label", ["rollout"], 2)
    tasks.check_task("none", RegressionOutput(), ["rollout", "grad_rollout"], 2)


@pytest.mark.parametrize(
    "task, target, labels, masks, message",
    [
        ("multiclass", "label", torch.eye(2).long(), None, r"\(2, 2\) \(multi-hot labels: pass `task`='multilab"),
        ("multilabel", "label", torch.tensor([1, 0]), None, r"needs multi-hot labels \(B, num_labels\) of 0s and 1s"),
        ("multilabel", "label", torch.tensor([[2.0, 0.0]]), None, "of 0s and 1s"),
        ("multilabel", "label", torch.ones(1, 2), torch.zeros(1, 3, 4, 4), "masks hold 3 classes but the labels 2"),
    ],
)
def test_check_labels_errors(task, target, labels, masks, message):
    with pytest.raises(ValueError, match=message):
        tasks.check_labels(task, target, labels, masks)


def test_check_labels_accepts():
    tasks.check_labels("multiclass", "label", torch.tensor([1, 0]), None)
    tasks.check_labels("multiclass", "prediction", torch.eye(2), None)  # labels unused: only the prediction
    tasks.check_labels("multilabel", "label", torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2, 4, 4))
    tasks.check_labels("none", "label", None, None)
