"""Is there a personal signal to learn? Users' agreement with co-annotators, across prompts.

A rank > 1 model can only beat one shared reward on new prompts if users
depart from the crowd *consistently*: a user who disagrees with the others
on training prompts should also disagree on held-out ones. Where several
users labelled the same pair (a row of `PreferencePairs` is chosen minus
rejected, so the same pair is the same row up to sign), this measures

- ``pair_agreement``: the share of co-annotator pairs that agree, and the
  flip rate ``e`` it implies if every disagreement were independent label
  noise (agreement = (1 - e)^2 + e^2), with the accuracy ceiling ``1 - e``
  that noise would leave for any model;
- per user, the share of their co-annotated labels that agree with their
  co-annotators, on the first and on the second set of pairs (say, training
  and test prompts), and the correlation of the two across users. Near 0,
  with the spread on the second set no larger than sampling alone gives (each
  user's labels' own variance over their count), means a user's departures from the crowd do not carry over to new
  prompts: there is no stable personal signal for extra rank to capture.

`docs/accuracy.md` reads these numbers for the bundled data sets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from lore_datasets import PreferencePairs


def co_annotations(pairs: PreferencePairs) -> list[list[tuple[int, int]]]:
    """Groups of (user, label) for every pair labelled by two or more rows.

    A row's label is +1 when its first nonzero coordinate is positive, else
    -1; rows equal up to that sign are the same pair.
    """
    Z = pairs.features.detach().to(torch.float32).cpu().numpy()
    nonzero = Z != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    sign = np.where(Z[np.arange(len(Z)), first] < 0, -1, 1)
    groups: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    users = pairs.user.cpu().numpy()
    for row in range(len(Z)):
        groups[(Z[row] * sign[row]).tobytes()].append((int(users[row]), int(sign[row])))
    return [g for g in groups.values() if len(g) > 1]


def _agreement(groups: list[list[tuple[int, int]]], num_users: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per user: summed agreement with co-annotators, its sum of squares and labels
    counted; and the pooled agreement of co-annotator pairs."""
    agree, squares, counted = np.zeros(num_users), np.zeros(num_users), np.zeros(num_users)
    same = total = 0
    for group in groups:
        labels = np.array([label for _, label in group])
        for i, (user, label) in enumerate(group):
            others = np.delete(labels, i)
            share = float((others == label).mean())
            agree[user] += share
            squares[user] += share * share
            counted[user] += 1
        n = len(labels)
        plus = int((labels > 0).sum())
        same += plus * (plus - 1) // 2 + (n - plus) * (n - plus - 1) // 2
        total += n * (n - 1) // 2
    return agree, squares, counted, same / total if total else math.nan


def annotator_consistency(first: PreferencePairs, second: PreferencePairs, *,
                          min_first: int = 10, min_second: int = 5) -> dict[str, Any]:
    """Co-annotator agreement on two sets of pairs over the same users (see the module doc).

    Users need ``min_first`` / ``min_second`` co-annotated labels in each set
    to enter the per-user numbers.
    """
    if first.user_ids != second.user_ids:
        raise ValueError("the two sets must share one user list (two splits of the same users)")
    a1, _, n1, pooled1 = _agreement(co_annotations(first), first.num_users)
    a2, sq2, n2, pooled2 = _agreement(co_annotations(second), second.num_users)
    out: dict[str, Any] = {"pair_agreement": {"first": pooled1, "second": pooled2}}
    if pooled1 == pooled1 and pooled1 > 0.5:  # not NaN: some pairs were co-annotated
        flip = (1 - math.sqrt(2 * pooled1 - 1)) / 2
        out["flip_rate_if_noise"], out["noise_ceiling"] = flip, 1 - flip
    users = (n1 >= min_first) & (n2 >= min_second)
    out["users"] = int(users.sum())
    if out["users"] < 3:
        return out
    r1, r2 = a1[users] / n1[users], a2[users] / n2[users]
    # the spread of a user's rate from their labels' own variance alone
    within = np.clip(sq2[users] / n2[users] - r2 * r2, 0, None) / n2[users]
    out.update(
        agreement_first={"mean": float(r1.mean()), "std": float(r1.std())},
        agreement_second={"mean": float(r2.mean()), "std": float(r2.std())},
        sampling_std_second=float(np.sqrt(within.mean())),
        correlation=float(np.corrcoef(r1, r2)[0, 1]),
    )
    return out
