"""Ready-made targets: hand-checked values, gradients by autograd, and every error message."""

import pytest
import torch

from lightning_rollout.targets import ClassLogit, EmbeddingSimilarity, RegressionOutput, positive_labels


def test_class_logit_fixed_and_per_sample():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert ClassLogit(2)(logits).tolist() == [3.0, 6.0]
    assert ClassLogit([0, 1])(logits).tolist() == [1.0, 5.0]
    assert ClassLogit(torch.tensor([2, 0]))(logits).tolist() == [3.0, 4.0]


def test_class_logit_gradient_is_one_on_the_chosen_entries():
    logits = torch.zeros(2, 3, requires_grad=True)
    ClassLogit([1, 2])(logits).sum().backward()
    assert logits.grad.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_positive_labels_pairs_and_cap():
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    samples, classes = positive_labels(labels)
    assert samples.tolist() == [0, 0, 0, 2] and classes.tolist() == [0, 2, 3, 1]
    samples, classes = positive_labels(labels, max_per_sample=2)
    assert samples.tolist() == [0, 0, 2] and classes.tolist() == [0, 2, 1]
    samples, classes = positive_labels(labels.bool(), max_per_sample=1)
    assert samples.tolist() == [0, 2] and classes.tolist() == [0, 1]


def test_positive_labels_with_class_logit_explain_each_pair():
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    logits = torch.tensor([[0.5, 1.5, 2.5], [3.5, 4.5, 5.5]])
    samples, classes = positive_labels(labels)
    assert ClassLogit(classes)(logits[samples]).tolist() == [0.5, 2.5, 4.5]


def test_embedding_similarity_values():
    references = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    embeddings = torch.tensor([[3.0, 4.0], [3.0, 4.0], [-1.0, 0.0]])
    # cos((3, 4), (1, 0)) = 3/5; cos((3, 4), (0, 2)) = 4/5; cos((-1, 0), (1, 0)) = -1.
    scores = EmbeddingSimilarity(references, index=[0, 1, 0])(embeddings)
    assert torch.allclose(scores, torch.tensor([0.6, 0.8, -1.0]))
    assert torch.allclose(EmbeddingSimilarity(references[1])(embeddings[:2]), torch.tensor([0.8, 0.8]))


def test_embedding_similarity_gradient_matches_hand_derivation():
    # d cos(x, r) / dx = r / (|x||r|) - cos(x, r) x / |x|^2; at x = (3, 4), r = (1, 0): (1/5, 0) - 3/5 (3, 4)/25.
    embedding = torch.tensor([[3.0, 4.0]], requires_grad=True)
    EmbeddingSimilarity(torch.tensor([1.0, 0.0]))(embedding).sum().backward()
    expected = torch.tensor([[0.2 - 0.6 * 3 / 25, -0.6 * 4 / 25]])
    assert torch.allclose(embedding.grad, expected)
    assert torch.autograd.gradcheck(
        EmbeddingSimilarity(torch.randn(3, 5, dtype=torch.float64), index=[2, 0]),
        (torch.randn(2, 5, dtype=torch.float64, requires_grad=True),),
    )


def test_embedding_similarity_keeps_no_graph_of_the_references():
    references = torch.randn(2, 4, requires_grad=True)
    target = EmbeddingSimilarity(references * 2)
    assert not target.references.requires_grad


def test_regression_output():
    assert RegressionOutput()(torch.tensor([1.5, -2.0])).tolist() == [1.5, -2.0]
    assert RegressionOutput()(torch.tensor([[1.5], [-2.0]])).tolist() == [1.5, -2.0]
    assert RegressionOutput(index=1)(torch.tensor([[1.0, 7.0], [2.0, 8.0]])).tolist() == [7.0, 8.0]
    output = torch.zeros(2, 3, requires_grad=True)
    RegressionOutput(index=2)(output).sum().backward()
    assert output.grad[:, 2].tolist() == [1.0, 1.0] and float(output.grad[:, :2].abs().sum()) == 0.0


@pytest.mark.parametrize(
    "build, output, message",
    [
        (lambda: ClassLogit(1.5), None, "`classes` must be an int, a list of ints"),
        (lambda: ClassLogit(-1), None, "`classes` must be non-negative"),
        (lambda: ClassLogit(torch.tensor([0.0])), None, "`classes` must be an int"),
        (lambda: ClassLogit(3), torch.zeros(2, 3), r"`classes` must be < num_classes=3, got 3"),
        (lambda: ClassLogit([0, 1, 2]), torch.zeros(2, 3), "holds 3 indices for a batch of 2 samples"),
        (lambda: ClassLogit(0), torch.zeros(2), r"needs an output of shape \(B, num_classes\), got shape \(2,\)"),
        (lambda: EmbeddingSimilarity(torch.zeros(2, 3, 4)), None, r"`references` must be a float tensor \(D,\)"),
        (lambda: EmbeddingSimilarity(torch.zeros(2, 4), index=2), None, r"`index` must be < the number of refer"),
        (lambda: EmbeddingSimilarity(torch.zeros(2, 4)), torch.zeros(2, 5), "have 5 dimensions but `references` 4"),
        (lambda: RegressionOutput(index=-1), None, "`index` must be an int >= 0"),
        (lambda: RegressionOutput(), torch.zeros(2, 3), r"needs an output \(B,\) or \(B, 1\), got shape \(2, 3\)"),
        (lambda: RegressionOutput(index=3), torch.zeros(2, 3), r"needs an output \(B, K\) with K > 3"),
    ],
)
def test_errors_name_the_argument_and_value(build, output, message):
    with pytest.raises(ValueError, match=message):
        target = build()
        target(output)


def test_positive_labels_errors():
    with pytest.raises(ValueError, match=r"`labels` must be multi-hot labels of shape \(B, C\), got shape \(3,\)"):
        positive_labels(torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="`max_per_sample` must be an int >= 1, got 0"):
        positive_labels(torch.ones(2, 2), max_per_sample=0)


def test_reprs_name_the_settings():
    assert repr(ClassLogit([1, 2])) == "ClassLogit([1, 2])"
    assert repr(RegressionOutput(index=1)) == "RegressionOutput(index=1)"
    assert repr(EmbeddingSimilarity(torch.zeros(2, 3), index=1)) == "EmbeddingSimilarity(2 references, index=1)"
