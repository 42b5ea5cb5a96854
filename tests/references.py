"""Reference implementations written as plain loops, shared by the metric test modules."""

from __future__ import annotations

import itertools


def pair_f1_loop(labels, clusters) -> float:
    """Pair counting over all unordered pairs: TP same label & same cluster, FP same cluster only,
    FN same label only; F1 = 2TP / (2TP + FP + FN)."""
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        same_label, same_cluster = labels[i] == labels[j], clusters[i] == clusters[j]
        tp += same_label and same_cluster
        fp += same_cluster and not same_label
        fn += same_label and not same_cluster
    return 2 * tp / (2 * tp + fp + fn)
