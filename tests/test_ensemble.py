"""Calibration, error analysis and ensemble arithmetic on hand-made arrays (no training)."""
from __future__ import annotations

import numpy as np
import pytest

from cifarlab.evaluation.analysis import most_confused, top_losses
from cifarlab.evaluation.calibration import expected_calibration_error, reliability_bins
from cifarlab.evaluation.ensemble import (EnsembleError, Member, accuracy_weights, combine, ensemble_weights,
                                          error_diversity, greedy_selection, select_members)


def test_ece_by_hand():
    # confidences 0.9, 0.8, 0.6, 0.55 all fall in the upper of 2 bins; 3 of 4 are right
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    b = reliability_bins(probs, labels, n_bins=2)
    assert b["count"] == [0, 4]
    assert b["accuracy"][1] == pytest.approx(0.75) and b["confidence"][1] == pytest.approx(0.7125)
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(100 * (0.75 - 0.7125))


def test_ece_matches_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 500)
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, 11)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(100 * ece, abs=1e-9)
    # a perfectly confident and correct classifier is perfectly calibrated
    onehot = np.eye(5)[labels]
    assert expected_calibration_error(onehot, labels) == pytest.approx(0.0)


def test_most_confused_and_top_losses():
    cm = np.array([[5, 3, 0], [1, 7, 0], [0, 4, 2]])
    pairs = most_confused(cm, ["a", "b", "c"], k=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 4), ("a", "b", 3)]
    assert pairs[0]["percent_of_true"] == pytest.approx(100 * 4 / 6)
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95]])
    labels = np.array([0, 0, 1, 1])
    tl = top_losses(probs, labels, k=2)
    assert [t["index"] for t in tl] == [1, 2]
    assert tl[0]["loss"] == pytest.approx(-np.log(0.3)) and tl[0]["predicted"] == 1


def _onehotish(pred, n_classes=3, p=0.8):
    out = np.full((len(pred), n_classes), (1 - p) / (n_classes - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_combine_and_accuracy_weights():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert combine([a, b], [3, 1]).tolist() == [[0.75, 0.25]]
    with pytest.raises(EnsembleError):
        combine([a, b], [0, 0])
    labels = np.array([0, 1, 2, 0])
    good, half = _onehotish(np.array([0, 1, 2, 0])), _onehotish(np.array([0, 1, 0, 1]))
    w = accuracy_weights([good, half], labels)
    assert w.tolist() == pytest.approx([100 / 150, 50 / 150])


def test_accuracy_weights_refuse_members_that_are_all_wrong():
    labels = np.array([0, 1])
    wrong = [np.array([[.2, .8], [.9, .1]]), np.array([[.4, .6], [.6, .4]])]
    with pytest.raises(EnsembleError, match="0% validation top-1"):
        accuracy_weights(wrong, labels)
    assert accuracy_weights([wrong[0], np.eye(2)], labels).tolist() == [0.0, 1.0]
    assert greedy_selection(wrong, labels).sum() >= 1       # greedy still picks (by log loss)


def test_greedy_selection_by_hand():
    """Three rounds of Caruana's selection on four validation images, worked by hand.

    round 1: alone, m0 and m1 both get 50%; m1's log loss is lower (0.452 vs 0.570): pick m1.
    round 2: m1+m0 averages to 100%, m1+m1 and m1+m2 stay at 50%: pick m0 (best so far).
    round 3: every candidate keeps 100%; log losses 0.475 (+m0), 0.440 (+m1), 0.645 (+m2): pick m1,
    which beats round 2's 0.451, so the counts become [1, 2, 0].
    """
    labels = np.array([0, 1, 0, 1])
    m0 = np.array([[.8, .2], [.2, .8], [.4, .6], [.6, .4]])      # right on images 0, 1
    m1 = np.array([[.45, .55], [.55, .45], [.9, .1], [.1, .9]])  # right on images 2, 3
    m2 = np.array([[.3, .7], [.7, .3], [.3, .7], [.7, .3]])      # always wrong
    assert greedy_selection([m0, m1, m2], labels, max_rounds=1).tolist() == [0, 1, 0]
    assert greedy_selection([m0, m1, m2], labels, max_rounds=2).tolist() == [1, 1, 0]
    assert greedy_selection([m0, m1, m2], labels, max_rounds=3).tolist() == [1, 2, 0]


def test_greedy_selection_picks_complementary_members():
    labels = np.array([0, 1, 2, 0, 1, 2])
    # m0 right on the first 4, m1 right on the last 4 but confidently wrong elsewhere, m2 always wrong
    m0 = _onehotish(np.array([0, 1, 2, 0, 0, 0]), p=0.9)
    m1 = _onehotish(np.array([1, 2, 2, 0, 1, 2]), p=0.6)
    m2 = _onehotish(np.array([1, 2, 0, 1, 2, 0]), p=0.99)
    counts = greedy_selection([m0, m1, m2], labels)
    assert counts[2] == 0                   # a useless member is never picked
    assert counts[0] >= 1
    ens = combine([m0, m1, m2], counts)
    assert (ens.argmax(1) == labels).mean() >= max((m.argmax(1) == labels).mean() for m in (m0, m1, m2))
    # "at least one per architecture": starting members are kept
    assert greedy_selection([m0, m1, m2], labels, init=[2])[2] >= 1


def test_selection_rules_and_missing_validation():
    labels = np.array([0, 1, 2])
    good = Member("good", "a", _onehotish(labels), _onehotish(labels))
    bad = Member("bad", "b", _onehotish(labels), _onehotish(np.array([1, 2, 0])))
    kept, notes = select_members([good, bad], labels, min_val_acc=50)
    assert [m.name for m in kept] == ["good"] and "bad" in notes[0]
    with pytest.raises(EnsembleError, match="no run reaches"):
        select_members([bad], labels, min_val_acc=50)
    noval = Member("noval", "a", _onehotish(labels))
    assert ensemble_weights("uniform", [good, noval], None).tolist() == [0.5, 0.5]
    with pytest.raises(EnsembleError, match="noval.*--val-size"):
        ensemble_weights("greedy", [good, noval], labels)
    w = ensemble_weights("greedy", [good, bad], labels, per_architecture=True)
    assert w[1] > 0 and w.sum() == pytest.approx(1.0)


def test_error_diversity_by_hand():
    labels = np.array([0, 1, 2, 0, 1, 2])
    a = _onehotish(np.array([1, 1, 2, 0, 1, 0]))     # wrong on images 0 and 5
    b = _onehotish(np.array([1, 2, 2, 0, 1, 2]))     # wrong on 0 and 1
    perfect = _onehotish(labels)
    d = error_diversity([a, b, perfect], labels, ["a", "b", "perfect"])
    assert (d["images"], d["wrong_for_any"]) == (6, 3)
    assert d["wrong_for_all"] == 0 and d["oracle_top1"] == 100.0   # the perfect member is right everywhere
    # a's errors [1,0,0,0,0,1] vs b's [1,1,0,0,0,0]: Pearson r = (1/6 - 1/9) / (2/9) = 0.25
    assert d["error_correlation"]["a vs b"] == pytest.approx(0.25)
    assert d["error_correlation"]["a vs perfect"] is None            # no errors: correlation undefined
    assert d["mean_error_correlation"] == pytest.approx(0.25)
    two = error_diversity([a, b], labels, ["a", "b"])
    assert two["wrong_for_all"] == 1 and two["oracle_top1"] == pytest.approx(100 * 5 / 6)
    same = error_diversity([a, a], labels, ["a", "a2"])
    assert same["error_correlation"]["a vs a2"] == pytest.approx(1.0)
