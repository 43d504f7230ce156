"""The study's switches and the label-free choice of the stage model a run
hands back: the rule itself on measured patterns, the per-class gamma that
gives every class confident members, the SGD and frozen-head options."""

import numpy as np
import pytest
import torch

from conlst_ray.algorithm.negatives import NegativePool, Predictions, relative_gamma
from conlst_ray.reporting.selection import StageSignals, agreement, choose_stage, judge


def chain(*accs):
    names = ["zero-shot", "CoNL", "CoNLST"][: len(accs)]
    return [StageSignals(n, a, None, None) for n, a in zip(names, accs)]


def test_each_stage_is_judged_against_zero_shot_on_its_own_and_the_best_accepted_is_handed_back():
    # the user's CPU config (docs/CPU_PATH.md): CoNL lost 2.0 points, the self-training built on it gained;
    # the old rule stopped at CoNL and handed back zero-shot
    index, reason = choose_stage(chain(64.0, 62.0, 65.4), "label_free", 0.5)
    assert index == 2
    assert "refused: CoNL" in reason
    # every stage within the tolerance: the best source dev accuracy, not merely the last
    assert choose_stage(chain(69.8, 69.5, 70.2), "label_free", 0.5)[0] == 2
    assert choose_stage(chain(69.8, 70.4, 70.2), "label_free", 0.5)[0] == 1
    # nothing beats zero-shot: zero-shot
    index, reason = choose_stage(chain(69.8, 69.6, 68.0), "label_free", 0.5)
    assert index == 0 and "refused: CoNLST" in reason


def test_a_prior_corrected_candidate_ties_its_base_and_wins_the_tie_with_a_line_per_candidate():
    signals = [StageSignals("zero-shot", 69.8, None, None), StageSignals("zero-shot + prior", 69.8, None, None,
                                                                          "zero-shot"),
               StageSignals("CoNL", 68.0, None, None), StageSignals("CoNLST", 71.0, None, None),
               StageSignals("CoNLST + prior", 71.0, None, None, "CoNLST")]
    index, reason, lines = judge(signals, "label_free", 0.5)
    assert signals[index].name == "CoNLST + prior"
    assert "ties CoNLST" in reason
    assert len(lines) == 5 and "refused" in lines[2] and "handed back" in lines[4]
    # without a trained stage that beats it, the corrected zero-shot is handed back, not zero-shot
    assert judge(signals[:3], "label_free", 0.5)[0] == 1
    # rule=last: the final *trained* stage, as the paper does
    assert judge(signals, "last", 0.5)[0] == 3


def test_rule_last_and_a_run_without_source_dev_hand_back_the_final_stage():
    assert choose_stage(chain(69.8, 60.0, 61.0), "last", 0.5)[0] == 2
    index, reason = choose_stage(chain(None, None, None), "label_free", 0.5)
    assert index == 2 and "data.source_dev" in reason


def test_agreement_matches_rows_by_id_not_by_position():
    import pyarrow as pa

    a = pa.table({"id": ["x", "y", "z", "w"], "pseudo_label": [0, 1, 2, 2]})
    b = pa.table({"id": ["z", "y", "x", "w"], "pseudo_label": [2, 1, 1, 0]})
    assert agreement(a, b) == pytest.approx(0.5)      # y and z agree; x and w do not
    assert agreement(a, None) is None


def test_per_class_gamma_gives_the_under_confident_class_confident_members():
    """XNLI's neutral class is never predicted with the confidence of the
    others: one gamma per language leaves it no member (the issue's
    'class 1 of language xx has 0 confident members'); a quantile within
    each (language, class) gives every class its top share."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 300)
    conf = np.where(labels == 1, rng.uniform(0.35, 0.55, 900), rng.uniform(0.6, 0.99, 900))
    langs = ["sw"] * 900
    by_lang, _ = relative_gamma(conf, langs, 0.8)
    assert NegativePool(np.arange(900), Predictions(labels, conf, langs), by_lang, 3).size("sw", 1) == 0
    by_class, groups = relative_gamma(conf, langs, 0.8, classes=labels)
    pool = NegativePool(np.arange(900), Predictions(labels, conf, langs), by_class, 3)
    assert set(groups) == {"sw/0", "sw/1", "sw/2"}
    assert [pool.size("sw", c) for c in range(3)] == [60, 60, 60]     # the top fifth of each class


def test_sgd_moves_weights_in_proportion_to_the_gradient_where_adam_moves_them_by_the_rate():
    """The hypothesis behind conl.optimizer=sgd, on one weight: a loss 1000x
    smaller moves an SGD weight 1000x less; Adam's first step is lr either way."""
    from conlst_ray.training.optim import make_optimizer

    def first_step(kind, scale):
        model = torch.nn.Linear(4, 1, bias=False)
        torch.nn.init.zeros_(model.weight)  # the step is then the weight itself, exactly
        opt = make_optimizer(model, 1e-3, 0.0, kind)
        (scale * model(torch.ones(1, 4)).sum()).backward()
        opt.step()
        return float(model.weight.detach().abs().mean())

    assert first_step("adamw", 1e-3) == pytest.approx(first_step("adamw", 1.0), rel=1e-3) == pytest.approx(1e-3,
                                                                                                           rel=1e-2)
    assert first_step("sgd", 1e-3) == pytest.approx(first_step("sgd", 1.0) * 1e-3, rel=1e-3)


def test_conl_with_a_frozen_classifier_leaves_the_head_and_trains_the_encoder(synthetic_tokenizer):
    from conlst_ray.config import Config, with_values
    from conlst_ray.models.encoder import build_model
    from conlst_ray.ray_jobs.worker import freeze

    cfg = with_values(Config(), {"conl.train_classifier": False})
    model = build_model(cfg.model, synthetic_tokenizer)
    freeze(model, cfg, "conl")
    assert not any(p.requires_grad for p in model.classifier.parameters())
    assert all(p.requires_grad for p in model.contrastive_head.parameters())
    model2 = build_model(cfg.model, synthetic_tokenizer)
    freeze(model2, cfg, "ssl")                    # the switch is CoNL's only
    assert all(p.requires_grad for p in model2.classifier.parameters())
