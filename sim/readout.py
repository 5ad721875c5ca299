"""Linear readouts: how much of the label a representation keeps (the demo's quality measure)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

__all__ = ["readout_accuracy", "READOUTS"]

#: the demo's readout first; the others are reported beside it
READOUTS = ("linear SVM", "logistic regression")


def readout_accuracy(features: np.ndarray, labels: np.ndarray, train: int,
                     readout: str = READOUTS[0]) -> float:
    """Test accuracy of a linear classifier trained on the first `train` samples: a linear SVM
    (LinearSVC, C = 0.03) or logistic regression (C = 1). The same classifier serves raw inputs
    and every SP, so the figures compare representations, not classifiers."""

    features = features.reshape(len(features), -1).astype(np.float32)
    if readout == "linear SVM":
        # random_state fixes liblinear's shuffling, else numpy's global random state (and so
        # the process it runs in) can change the figure
        clf = LinearSVC(C=0.03, max_iter=50_000, random_state=0)
    elif readout == "logistic regression":
        clf = LogisticRegression(max_iter=3000)
    else:
        raise ValueError(f"unknown readout {readout!r}: use one of {READOUTS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(features[:train], labels[:train])
    return float(clf.score(features[train:], labels[train:]))
