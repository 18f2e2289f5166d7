"""pgu.bench.metrics against hand-worked numbers (docs/protocol.md, section "Metrics")."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pgu.bench.challenge import challenge_score, forgetting_quality, logit_scaled_confidence, per_example_epsilon
from pgu.bench.metrics import (
    activation_distance,
    avg_gap,
    forget_progress,
    gap_closed,
    js_divergence,
    loss_mia,
    mia_efficacy,
    prediction_entropy,
    top1_accuracy,
    true_class_probability,
    unlearning_accuracy,
)

DELTA = 1e-5


# --------------------------------------------------------------------------- accuracy


def test_accuracy_from_labels_scores_and_tensors():
    # 3 of 4 predictions right -> 75 %.
    assert top1_accuracy([0, 1, 1, 1], [0, 1, 2, 1]) == pytest.approx(75.0)
    # Scores: argmax of the rows is [1, 0, 2]; labels [1, 1, 2] -> 2 of 3 right.
    scores = torch.tensor([[0.1, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    assert top1_accuracy(scores, torch.tensor([1, 1, 2])) == pytest.approx(200.0 / 3.0)
    assert top1_accuracy(np.array([2, 2]), np.array([2.0, 2.0])) == 100.0


def test_accuracy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one label per sample"):
        top1_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        top1_accuracy([], [])
    with pytest.raises(ValueError, match="integer class indices"):
        top1_accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        top1_accuracy(np.eye(3), [0, 1, 3])
    with pytest.raises(ValueError, match=">= 0"):
        top1_accuracy([-1, 0], [0, 0])
    with pytest.raises(ValueError, match="shape"):
        top1_accuracy(np.zeros((2, 2, 2)), [0, 1])


def test_unlearning_accuracy_is_100_minus_forget_accuracy():
    # SalUn's retrain row: FA = 94.76 -> UA = 5.24.
    assert unlearning_accuracy(94.76) == pytest.approx(5.24)
    assert unlearning_accuracy(0) == 100.0
    with pytest.raises(ValueError, match="percent"):
        unlearning_accuracy(101.0)
    with pytest.raises(ValueError, match="real number"):
        unlearning_accuracy("90")


def test_true_class_probability_picks_the_label_column():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(true_class_probability(probs, [0, 1, 1]), [0.7, 0.1, 0.5])


def test_probability_checks_say_what_to_fix():
    with pytest.raises(ValueError, match="sum to 1"):
        true_class_probability([[0.5, 0.4]], [0])  # row sums to 0.9
    with pytest.raises(ValueError, match="softmax to logits"):
        true_class_probability([[2.0, -1.0]], [0])
    with pytest.raises(ValueError, match="NaN"):
        true_class_probability([[float("nan"), 1.0]], [0])
    with pytest.raises(ValueError, match="2-D"):
        true_class_probability([0.5, 0.5], [0])
    with pytest.raises(ValueError, match="dtype"):
        true_class_probability([["a", "b"]], [0])
    with pytest.raises(ValueError, match="None"):
        true_class_probability(None, [0])
    # A row off by less than 1e-4 is accepted.
    assert true_class_probability([[0.50004, 0.5]], [0])[0] == pytest.approx(0.50004)


# --------------------------------------------------------------------------- membership inference


def _members_and_heldout(rng: np.random.Generator, n_retain: int = 400, n_heldout: int = 200):
    """Members confident (p_y in [0.9, 1]), non-members not (p_y in [0, 0.4]): separable."""
    return rng.uniform(0.9, 1.0, n_retain), rng.uniform(0.0, 0.4, n_heldout)


def test_mia_efficacy_on_separable_features():
    rng = np.random.default_rng(1)
    retain, heldout = _members_and_heldout(rng)
    # Forget samples that look held-out are all predicted non-member -> 100 %.
    assert mia_efficacy(retain, heldout, rng.uniform(0.0, 0.4, 50)) == pytest.approx(100.0)
    # Forget samples that look like members -> 0 %.
    assert mia_efficacy(retain, heldout, rng.uniform(0.9, 1.0, 50)) == pytest.approx(0.0)
    # Half and half -> 50 %.
    half = np.concatenate([rng.uniform(0.0, 0.4, 25), rng.uniform(0.9, 1.0, 25)])
    assert mia_efficacy(retain, heldout, half) == pytest.approx(50.0)


def test_mia_efficacy_with_a_retain_set_smaller_than_the_heldout_set():
    rng = np.random.default_rng(2)
    retain, heldout = _members_and_heldout(rng, n_retain=30, n_heldout=300)
    assert mia_efficacy(retain, heldout, rng.uniform(0.0, 0.4, 20)) == pytest.approx(100.0)
    assert mia_efficacy(retain, heldout, rng.uniform(0.9, 1.0, 20)) == pytest.approx(0.0)


def test_mia_efficacy_is_reproducible_and_depends_on_the_seed():
    rng = np.random.default_rng(3)
    retain = rng.beta(5, 1, 300)  # overlapping distributions: the subset drawn matters
    heldout = rng.beta(2, 1, 40)
    forget = rng.beta(3, 1, 200)
    first = mia_efficacy(retain, heldout, forget, seed=7)
    assert mia_efficacy(retain, heldout, forget, seed=7) == first
    assert mia_efficacy(torch.tensor(retain), torch.tensor(heldout), torch.tensor(forget), seed=7) == first
    assert len({mia_efficacy(retain, heldout, forget, seed=s) for s in range(8)}) > 1


def test_mia_efficacy_draws_members_without_replacement():
    # Retain and held-out of equal size: the member subset is all of the retain set (only its
    # order depends on the seed), so the attack, and the result, cannot depend on the seed.
    rng = np.random.default_rng(8)
    retain, heldout, forget = rng.beta(5, 1, 60), rng.beta(2, 1, 60), rng.beta(3, 1, 200)
    assert len({mia_efficacy(retain, heldout, forget, seed=s) for s in range(6)}) == 1


def test_mia_efficacy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        mia_efficacy([], [0.1], [0.2])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        mia_efficacy([0.9, 1.5], [0.1], [0.2])
    with pytest.raises(ValueError, match="1-D"):
        mia_efficacy([[0.9]], [0.1], [0.2])


def test_loss_mia_is_chance_on_identical_distributions():
    rng = np.random.default_rng(4)
    result = loss_mia(rng.exponential(1.0, 600), rng.exponential(1.0, 900))
    assert 40.0 <= result <= 60.0


def test_loss_mia_is_perfect_on_separated_losses_and_reproducible():
    rng = np.random.default_rng(5)
    forget, heldout = rng.uniform(0.0, 0.1, 100), rng.uniform(2.0, 3.0, 300)
    assert loss_mia(forget, heldout) == pytest.approx(100.0)
    overlapping = rng.exponential(1.0, 80), rng.exponential(1.5, 200)
    assert loss_mia(*overlapping, seed=3) == loss_mia(*overlapping, seed=3)


def test_loss_mia_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least folds=5"):
        loss_mia([0.1, 0.2, 0.3, 0.4], [1.0] * 10)
    with pytest.raises(ValueError, match=">= 0"):
        loss_mia([-0.1] * 10, [1.0] * 10)
    with pytest.raises(ValueError, match="folds must be an integer"):
        loss_mia([0.1] * 10, [1.0] * 10, folds=1)
    with pytest.raises(ValueError, match="NaN"):
        loss_mia([0.1] * 9 + [float("inf")], [1.0] * 10)


# --------------------------------------------------------------------------- gaps


def test_avg_gap_by_hand():
    method = {"UA": 5.0, "RA": 99.0, "TA": 94.0, "MIA": 12.0}
    retrain = {"UA": 5.24, "RA": 100.0, "TA": 94.26, "MIA": 12.88, "extra": 1.0}
    # (0.24 + 1.00 + 0.26 + 0.88) / 4 = 2.38 / 4 = 0.595
    assert avg_gap(method, retrain) == pytest.approx(0.595)
    # Only UA and RA: (0.24 + 1.00) / 2 = 0.62
    assert avg_gap(method, retrain, keys=("UA", "RA")) == pytest.approx(0.62)
    assert avg_gap(retrain, retrain) == 0.0


def test_avg_gap_names_the_missing_key():
    with pytest.raises(ValueError, match="reference has no 'MIA'"):
        avg_gap({"UA": 1, "RA": 1, "TA": 1, "MIA": 1}, {"UA": 1, "RA": 1, "TA": 1})
    with pytest.raises(ValueError, match="metrics has no 'TA'"):
        avg_gap({"UA": 1, "RA": 1}, {"UA": 1, "RA": 1, "TA": 1, "MIA": 1})
    with pytest.raises(ValueError, match="non-empty"):
        avg_gap({}, {}, keys=())
    with pytest.raises(ValueError, match="finite"):
        avg_gap({"UA": float("nan")}, {"UA": 1.0}, keys=("UA",))


def test_gap_closed():
    # 1 - 0.5 / 2.0 = 0.75
    assert gap_closed(0.5, 2.0) == pytest.approx(0.75)
    # Worse than doing nothing: 1 - 3 / 2 = -0.5
    assert gap_closed(3.0, 2.0) == pytest.approx(-0.5)
    assert gap_closed(1.0, 0.0) is None
    with pytest.raises(ValueError, match="gap_original"):
        gap_closed(1.0, -1.0)


def test_forget_progress():
    # original 99.6, retrained 99.2: a method at 99.4 went half the way
    assert forget_progress(99.4, 99.6, 99.2) == pytest.approx(0.5)
    assert forget_progress(99.6, 99.6, 99.2) == pytest.approx(0.0)
    assert forget_progress(97.6, 99.6, 99.2) == pytest.approx(5.0)  # overshot: five times the way
    assert forget_progress(99.8, 99.6, 99.2) == pytest.approx(-0.5)  # moved away
    assert forget_progress(0.0, 100.0, 0.0) == pytest.approx(1.0)  # class removal done
    assert forget_progress(50.0, 99.2, 99.2) is None
    with pytest.raises(ValueError, match="fa_method"):
        forget_progress(101.0, 99.6, 99.2)


# --------------------------------------------------------------------------- agreement


def test_activation_distance_by_hand():
    # ||[1, 0] - [0, 1]|| = sqrt(2); identical rows give 0; mean of the two = sqrt(2) / 2.
    assert activation_distance([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(math.sqrt(2))
    p = [[1.0, 0.0], [0.3, 0.7]]
    q = [[0.0, 1.0], [0.3, 0.7]]
    assert activation_distance(p, q) == pytest.approx(math.sqrt(2) / 2)
    # ||[0.5, 0.5, 0] - [0.5, 0, 0.5]|| = sqrt(0.25 + 0.25) = sqrt(0.5)
    assert activation_distance([[0.5, 0.5, 0.0]], [[0.5, 0.0, 0.5]]) == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError, match="same shape"):
        activation_distance([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])


def test_js_divergence_by_hand():
    # Disjoint supports: ln 2, the maximum.
    assert js_divergence([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(math.log(2))
    assert js_divergence([[0.2, 0.8]], [[0.2, 0.8]]) == pytest.approx(0.0, abs=1e-15)
    # p = [1, 0], q = [1/2, 1/2], m = [3/4, 1/4]:
    # KL(p||m) = ln(4/3); KL(q||m) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    # JS = 1/2 ln(4/3) + 1/4 ln(4/3) = 3/4 ln(4/3) ~= 0.215762
    assert js_divergence([[1.0, 0.0]], [[0.5, 0.5]]) == pytest.approx(0.75 * math.log(4 / 3))
    # Mean over the two rows above: (ln 2 + 0) / 2
    assert js_divergence([[1.0, 0.0], [0.2, 0.8]], [[0.0, 1.0], [0.2, 0.8]]) == pytest.approx(math.log(2) / 2)
    # Symmetric.
    assert js_divergence([[0.5, 0.5]], [[1.0, 0.0]]) == pytest.approx(0.75 * math.log(4 / 3))
    with pytest.raises(ValueError, match="same shape"):
        js_divergence([[1.0, 0.0]], [[1.0, 0.0, 0.0]])


def test_prediction_entropy_by_hand():
    # Uniform over 4: ln 4; one-hot: 0 (0 log 0 = 0); [1/2, 1/2, 0]: ln 2.
    out = prediction_entropy(torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))
    np.testing.assert_allclose(out, [math.log(4), 0.0, math.log(2)], atol=1e-12)
    assert out.shape == (3,)
    with pytest.raises(ValueError, match="empty"):
        prediction_entropy(np.zeros((0, 3)))


# --------------------------------------------------------------------------- per-example quality


def test_logit_scaled_confidence_by_hand():
    probs = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = logit_scaled_confidence(probs, [0, 1, 0, 0])
    # ln 0.5 - ln 0.5 = 0; ln 0.25 - ln 0.75 = -ln 3;
    # one-hot, right: the two zeros clip to 1e-12 -> ln 1 - ln(2e-12) = 26.9379;
    # one-hot, wrong: ln(1e-12) - ln(1 + 1e-12) = -27.6310.
    np.testing.assert_allclose(out, [0.0, -math.log(3), -math.log(2e-12), math.log(1e-12)], rtol=1e-9)
    assert np.all(np.isfinite(out))


def test_logit_scaled_confidence_keeps_the_small_mass_of_confident_rows():
    # p_y = 1 - 3e-10 and the rest 3e-10: ln(1 - 3e-10) - ln(3e-10) ~= -ln(3e-10) = 21.927
    probs = np.array([[1.0 - 3e-10, 1e-10, 2e-10]])
    assert logit_scaled_confidence(probs, [0])[0] == pytest.approx(-math.log(3e-10), rel=1e-9)


def test_logit_scaled_confidence_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_scaled_confidence([[1.0]], [0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        logit_scaled_confidence([[0.5, 0.5]], [2])


def _brute_force_epsilon(u, r, delta=DELTA, cap=50.0, discard=False):
    """Every decision set an interval or its complement can make, enumerated; PROTOCOL's formula
    (``discard``: attacks with exactly one zero rate left out)."""
    values = sorted(set(u) | set(r))
    sets = {frozenset()}
    for i, j in itertools.combinations_with_replacement(range(len(values)), 2):
        inside = frozenset(values[i : j + 1])
        sets |= {inside, frozenset(values) - inside}
    best = -math.inf
    for chosen in sets:
        fpr = sum(x in chosen for x in r) / len(r)
        fnr = sum(x not in chosen for x in u) / len(u)
        if discard and (fpr == 0) != (fnr == 0):
            continue
        for a, b in ((fpr, fnr), (fnr, fpr)):
            if 1 - delta - a > 0:
                best = max(best, math.inf if b == 0 else math.log(1 - delta - a) - math.log(b))
    return min(cap, max(0.0, best))


def test_per_example_epsilon_identical_samples_give_zero():
    values = np.array([-1.0, 0.5, 2.0, 3.0])
    assert per_example_epsilon(values, values) == 0.0
    assert per_example_epsilon([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == 0.0


def test_per_example_epsilon_perfect_separation_gives_the_cap():
    # conf >= 4 decides every unlearned model unlearned and no retrained one: FPR = FNR = 0.
    assert per_example_epsilon([4.0, 5.0, 6.0, 7.0], [0.0, 1.0, 2.0, 3.0]) == 50.0
    assert per_example_epsilon([4.0, 5.0], [0.0, 1.0], cap=10.0) == 10.0


def test_per_example_epsilon_hand_worked_ties():
    # N = 4, u = [0, 0, 0, 1], r = [0, 1, 1, 1]; the decision sets over {0, 1}:
    #   {}     : FPR 0,   FNR 1    -> both terms negative
    #   {0, 1} : FPR 1,   FNR 0    -> log(1 - d) - log 1 < 0
    #   {1}    : FPR 3/4, FNR 3/4  -> log(1/4 - d) - log(3/4) < 0
    #   {0}    : FPR 1/4, FNR 1/4  -> log(3/4 - d) - log(1/4) = ln(3 - 4d)   (the max)
    assert per_example_epsilon([0, 0, 0, 1], [0, 1, 1, 1]) == pytest.approx(math.log(3 - 4 * DELTA), rel=1e-12)
    # u = [0, 0, 1, 1], r = [0, 1, 1, 1]: {0}: FPR 1/4, FNR 1/2;
    #   log(3/4 - d) - log(1/2) = ln 1.5, log(1/2 - d) - log(1/4) = ln(2 - 4d)   (the max)
    assert per_example_epsilon([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(math.log(2 - 4 * DELTA), rel=1e-12)


def test_per_example_epsilon_one_overlapping_value():
    # N = 4, u = [1, 2, 3, 4], r = [4, 5, 6, 7], overlapping at 4.
    # The literal rule ("infinite"): "unlearned when conf < 5" (the complement of conf >= 5) takes all of u and
    # r's 4: FPR = 1/4, FNR = 0, so log(1 - d - 1/4) - log 0 = +inf -> the cap, 50.
    u, r = [1.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 7.0]
    assert per_example_epsilon(u, r, zero_rates="infinite") == 50.0
    # zero_rates="discard" (the default): only attacks with FPR > 0 and FNR > 0 remain (FPR = FNR = 0 is
    # impossible: 4 is shared). Both rates are at least 1/4, and the interval [2, 4] reaches
    # FPR = 1/4 (r's 4), FNR = 1/4 (u's 1): log(3/4 - d) - log(1/4) = ln(3 - 4d), the max.
    assert per_example_epsilon(u, r, zero_rates="discard") == pytest.approx(math.log(3 - 4 * DELTA), rel=1e-12)


def test_per_example_epsilon_zero_rate_rules_differ_on_interleaved_values():
    # u = [0, 2], r = [1, 3]. "conf < 1" decides {0}: FPR 0, FNR 1/2 ->
    # log(1/2 - d) - log 0 = +inf: the cap under the literal rule. Discarding attacks with one
    # zero rate leaves FPR, FNR in {1/2, 1} (both > 0), whose terms are all <= 0 -> 0.
    assert per_example_epsilon([0.0, 2.0], [1.0, 3.0], zero_rates="infinite") == 50.0
    assert per_example_epsilon([0.0, 2.0], [1.0, 3.0], zero_rates="discard") == 0.0
    # Perfect separation is still infinite (capped) when discarding.
    assert per_example_epsilon([4.0, 5.0], [0.0, 1.0], zero_rates="discard") == 50.0


def test_per_example_epsilon_matches_a_brute_force_enumeration():
    rng = np.random.default_rng(6)
    for _ in range(60):
        u = rng.integers(0, 4, rng.integers(1, 7)).astype(float)
        r = rng.integers(0, 4, rng.integers(1, 7)).astype(float)
        assert per_example_epsilon(u, r, zero_rates="infinite") == pytest.approx(
            _brute_force_epsilon(list(u), list(r)), abs=1e-12)
        assert per_example_epsilon(u, r) == pytest.approx(
            _brute_force_epsilon(list(u), list(r), discard=True), abs=1e-12)


def test_per_example_epsilon_handles_128_models_quickly():
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(size=128), 1)
    assert per_example_epsilon(values, rng.permutation(values)) == 0.0


def test_per_example_epsilon_rejects_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        per_example_epsilon([], [1.0])
    with pytest.raises(ValueError, match="delta"):
        per_example_epsilon([1.0], [1.0], delta=0.0)
    with pytest.raises(ValueError, match="cap"):
        per_example_epsilon([1.0], [1.0], cap=-1.0)
    with pytest.raises(ValueError, match="zero_rates"):
        per_example_epsilon([1.0], [1.0], zero_rates="ignore")
    with pytest.raises(ValueError, match="NaN"):
        per_example_epsilon([float("nan")], [1.0])


def test_forgetting_quality_buckets():
    # N = 16: bar = ceil(ln 15) = ceil(2.708) = 3.
    # 0.2 -> bin 0 -> 1; 0.7 -> bin 1 -> 1/2; 1.2 -> bin 2 -> 1/4; 2.9 -> bin 5 -> 1/32;
    # 3.0 >= 3 -> 0; 50 -> 0.
    assert forgetting_quality([0.2], 16) == 1.0
    assert forgetting_quality([0.7], 16) == 0.5
    assert forgetting_quality([1.2], 16) == 0.25
    assert forgetting_quality([2.9], 16) == 1 / 32
    assert forgetting_quality([3.0, 50.0], 16) == 0.0
    assert forgetting_quality([0.2, 0.7, 1.2], 16) == pytest.approx(1.75 / 3)
    # N = 4: bar = ceil(ln 3) = ceil(1.0986) = 2; 1.99 -> bin 3 -> 1/8, 2.0 -> 0.
    assert forgetting_quality([1.99, 2.0], 4) == pytest.approx(0.0625)
    # Bucket edges: 0.5 is in bin 1.
    assert forgetting_quality([0.5, 0.0], 16) == 0.75


def test_forgetting_quality_rejects_bad_inputs():
    with pytest.raises(ValueError, match="n_models"):
        forgetting_quality([0.1], 1)
    with pytest.raises(ValueError, match=">= 0"):
        forgetting_quality([-0.1], 16)
    with pytest.raises(ValueError, match="non-empty"):
        forgetting_quality([], 16)


def _two_class_rows(p_true: list[float]) -> np.ndarray:
    """Rows [p, 1 - p] for each model: class 0 is the true class."""
    return np.array([[p, 1.0 - p] for p in p_true])


def test_challenge_score_end_to_end():
    # N = 4 models, 2 forget examples (label 0), 2 classes; bar = ceil(ln 3) = 2.
    # Example 0: the unlearned and retrained models give the same confidences -> eps 0 -> 1 point.
    # Example 1: every unlearned model is more confident than every retrained one -> eps 50 -> 0.
    same = [0.2, 0.4, 0.6, 0.8]
    unlearned = np.stack([_two_class_rows([same[m], 0.9]) for m in range(4)])  # (4, 2, 2)
    retrained = np.stack([_two_class_rows([same[3 - m], 0.3]) for m in range(4)])
    out = challenge_score(unlearned, retrained, [0, 0], 90.0, 100.0, 80.0, 100.0)
    assert out["epsilons"] == [0.0, 50.0]
    assert out["forgetting_quality"] == pytest.approx(0.5)
    # score = F * (RA_u / RA_r) * (TA_u / TA_r) = 0.5 * 0.9 * 0.8 = 0.36
    assert out["score"] == pytest.approx(0.36)


def test_challenge_score_rejects_bad_inputs():
    probs = np.full((4, 2, 2), 0.5)
    with pytest.raises(ValueError, match="same shape"):
        challenge_score(probs, probs[:3], [0, 0], 90, 100, 80, 100)
    with pytest.raises(ValueError, match="one label per sample"):
        challenge_score(probs, probs, [0], 90, 100, 80, 100)
    with pytest.raises(ValueError, match="ra_retrained is 0"):
        challenge_score(probs, probs, [0, 0], 90, 0, 80, 100)
    with pytest.raises(ValueError, match="3-D"):
        challenge_score(probs[0], probs[0], [0, 0], 90, 100, 80, 100)
    bad = probs.copy()
    bad[1, 0] = [0.5, 0.4]
    with pytest.raises(ValueError, match=r"rows of unlearned_probs must sum to 1.*\(1, 0\)"):
        challenge_score(bad, probs, [0, 0], 90, 100, 80, 100)
