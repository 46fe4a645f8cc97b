"""The planted-user ceilings of benchmarks/accuracy.py (docs/accuracy.md)."""

from __future__ import annotations

from lore_datasets import SplitConfig, synthetic_benchmark
from lore_train import FewShotSettings, fit_few_shot, per_user_accuracy, summarize


def test_bayes_optimal_fewshot_sits_between_a_fitted_user_and_the_oracle(accuracy_script,
                                                                        monkeypatch):
    """Knowing the planted basis, prior and flip rate, the posterior prediction from
    a user's few-shot pairs beats fitting their weights by maximum likelihood on the
    same basis, and cannot beat the oracle's true weights by more than chance."""
    accuracy = accuracy_script
    monkeypatch.setattr(accuracy, "BAYES_DRAWS", 20_000)
    bench, oracle = synthetic_benchmark(SplitConfig(seed=0))
    test = bench.unseen_test
    bayes = accuracy.bayes_fewshot_accuracy(bench, oracle)
    truth = summarize(per_user_accuracy(oracle.margins(test), test))["mean"]
    W = fit_few_shot(oracle.V, bench.unseen_fewshot, FewShotSettings(seed=0))
    fitted = summarize(per_user_accuracy(
        ((test.features @ oracle.V) * W.softmax(1)[test.user]).sum(1), test))["mean"]
    assert fitted < bayes <= truth + 0.01, (fitted, bayes, truth)
