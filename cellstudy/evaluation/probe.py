"""A quick check of an encoder: k-nearest-neighbour accuracy of perturbation identity on held-out plates.

Well profiles are normalised per plate to the plate's negative controls
(:func:`cellstudy.profiling.profiles.robustize_per_plate`, by default). Then every
replicate plate is held out in turn: each of its treated wells is classified by
the labels of its ``k`` most cosine-similar treated wells on the *other* plates
of its condition (modality, cell type, time point). Negative controls are left
out of both sides (they share one label and would dominate). Chance is the
accuracy of guessing the label of a random reference well.

This is a sanity check of pre-training (:func:`compare_encoders`: a pre-trained
encoder should beat the same encoder at random initialisation), not the
study's evaluation, which is :mod:`cellstudy.evaluation.retrieval`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cellstudy.columns import (
    CELL_TYPE,
    MODALITY,
    NEGCON,
    PLATE,
    SAMPLE,
    TIMEPOINT,
    WELL,
)
from cellstudy.profiling import embed
from cellstudy.profiling.profiles import (
    PostProcessing,
    feature_columns,
    metadata_columns,
    postprocess,
)
from cellstudy.similarity import cosine_similarity
from cellstudy.stats import paired_test
from cellstudy.training.train import load_encoder

CONDITION = (MODALITY, CELL_TYPE, TIMEPOINT)
"""Columns whose combination defines a set of replicate plates."""
PER_PLATE = PostProcessing(variance_filter=False, sphering=False)
"""Default normalisation before the probe: per-plate MAD-robustize to negative controls, nothing else."""


def knn_predict(reference: np.ndarray, labels: Sequence, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """Majority label among each query's ``k`` most cosine-similar reference rows.

    Votes are unweighted; a tie goes to the smallest label (as scikit-learn's
    ``KNeighborsClassifier``).
    """
    labels = np.asarray(labels)
    if not 1 <= k <= len(reference):
        raise ValueError(f"k must be between 1 and the number of references ({len(reference)}), got {k}")
    classes, codes = np.unique(labels, return_inverse=True)
    similarity = cosine_similarity(np.asarray(queries, dtype=float), np.asarray(reference, dtype=float))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(queries), len(classes)), dtype=int)
    np.add.at(votes, (np.repeat(np.arange(len(queries)), k), codes[nearest].ravel()), 1)
    return classes[votes.argmax(axis=1)]


def _check_complete(profiles: pd.DataFrame) -> None:
    """Raise naming the wells whose features are missing."""
    missing = profiles[feature_columns(profiles)].isna().any(axis=1)
    if missing.any():
        wells = profiles.loc[missing, [c for c in (PLATE, WELL) if c in profiles.columns]]
        raise ValueError(f"{missing.sum()} profile(s) have missing features, e.g. {wells.head(3).to_dict('records')}")


def knn_predictions(
    profiles: pd.DataFrame,
    k: int = 1,
    label: str = SAMPLE,
    postprocessing: PostProcessing | None = PER_PLATE,
    condition: Sequence[str] = CONDITION,
) -> pd.DataFrame:
    """Leave-one-plate-out kNN classification of ``label`` for every treated well.

    Parameters
    ----------
    profiles
        Well profiles: ``Metadata_*`` (with :data:`~cellstudy.profiling.profiles.PLATE`,
        :data:`~cellstudy.profiling.profiles.NEGCON`, ``label`` and ``condition``) and features.
    k
        Neighbours that vote.
    label
        The identity to predict.
    postprocessing
        Applied to all wells first (``None``: use the features as they are).
    condition
        Columns defining sets of replicate plates; conditions with one plate are skipped.

    Returns
    -------
    One row per classified well: its ``Metadata_*`` columns, ``predicted``,
    ``correct`` and ``chance`` (share of its reference wells that carry its label).

    Raises
    ------
    ValueError
        A profile has missing features (the message names the wells), or no condition has two plates.
    """
    _check_complete(profiles)
    if postprocessing is not None:
        profiles = postprocess(profiles, postprocessing)
    treated = profiles[~profiles[NEGCON]].reset_index(drop=True)
    features = treated[feature_columns(treated)].to_numpy(dtype=float)
    labels = treated[label].to_numpy()
    parts = []
    for _, group in treated.groupby(list(condition), sort=False, dropna=False):
        for plate in group[PLATE].unique() if group[PLATE].nunique() > 1 else []:
            on_plate = (group[PLATE] == plate).to_numpy()
            queries, references = group.index[on_plate], group.index[~on_plate]
            predicted = knn_predict(features[references], labels[references], features[queries], k)
            shares = pd.Series(labels[references]).value_counts(normalize=True)
            parts.append(
                treated.loc[queries, metadata_columns(treated)].assign(
                    predicted=predicted,
                    correct=predicted == labels[queries],
                    chance=shares.reindex(labels[queries], fill_value=0.0).to_numpy(),
                )
            )
    if not parts:
        raise ValueError(f"no condition ({', '.join(condition)}) has two plates to hold one out")
    return pd.concat(parts).sort_index()


def accuracy_table(predictions: pd.DataFrame, by: Sequence[str] = (MODALITY,)) -> pd.DataFrame:
    """Accuracy, chance and number of classified wells per ``by`` group, plus a row ``all`` over every well."""
    summary = {"accuracy": ("correct", "mean"), "chance": ("chance", "mean"), "n_wells": ("correct", "size")}
    groups = predictions.groupby(list(by)).agg(**summary).reset_index()
    overall = predictions.assign(**{column: "all" for column in by}).groupby(list(by)).agg(**summary).reset_index()
    return pd.concat([groups, overall], ignore_index=True)


def paired_difference(predictions: pd.DataFrame, first: str = "pre-trained", second: str = "random init") -> dict:
    """Accuracy of feature set ``first`` minus that of ``second`` on the same wells, with its paired-bootstrap 95%
    confidence interval and a Wilcoxon signed-rank p-value (:func:`cellstudy.stats.paired_test`).
    """
    correct = predictions.set_index([PLATE, WELL, "features"])["correct"].astype(float).unstack("features")
    return paired_test(correct[first], correct[second])


def comparison_table(predictions: pd.DataFrame, by: Sequence[str] = (MODALITY,)) -> pd.DataFrame:
    """:func:`accuracy_table` of each ``features`` set of :func:`compare_encoders`' predictions, stacked."""
    return pd.concat(
        [
            accuracy_table(group, by).assign(features=name)
            for name, group in predictions.groupby("features", sort=False)
        ],
        ignore_index=True,
    )


def compare_encoders(
    encoder_path: str | os.PathLike,
    fields: pd.DataFrame,
    k: int = 1,
    seed: int = 0,
    postprocessing: PostProcessing | None = PER_PLATE,
    device: str = "cpu",
    **embed_options,
) -> pd.DataFrame:
    """:func:`knn_predictions` for the encoder saved at ``encoder_path``, the same architecture at random
    initialisation (``seed``; the training seed gives the pre-trained encoder's own starting point) and the
    pixel-statistics baseline, in one table with a column ``features``.

    All three see the same tiles (each field is read once) and the same ``postprocessing``. Pass the study's
    :data:`cellstudy.profiling.profiles.EMBEDDING_POSTPROCESSING` to compare encoders as the evaluation sees them: without
    sphering, cosine similarity of raw embeddings is dominated by a few high-variance directions, which hides
    what pre-training adds. ``fields`` is a simulated screen's field table; both encoders run on ``device``
    (``"cuda"`` embeds the hundreds of thousands of tiles of a full screen on the GPU; the random
    initialisation is drawn on the CPU either way); ``embed_options`` go to
    :func:`cellstudy.profiling.embed.embed_fields`.
    """
    pretrained = load_encoder(encoder_path, device)
    pooling = embed.DEFAULT_POOLING[pretrained.method]
    featurisers = {
        "pre-trained": embed.encoder_featuriser(pretrained.encoder, pooling),
        "random init": embed.encoder_featuriser(embed.random_init_encoder(encoder_path, seed, device).encoder, pooling),
        "pixel statistics": embed.pixel_statistics_featuriser(),
    }
    combined = embed.embed_fields(
        fields, embed.combine_featurisers(featurisers), pretrained.stats, pretrained.crops, **embed_options
    )
    profiles = embed.split_features(combined, list(featurisers))
    return pd.concat(
        [
            knn_predictions(table, k, postprocessing=postprocessing).assign(features=name)
            for name, table in profiles.items()
        ],
        ignore_index=True,
    )


def pretraining_verdict(difference: Mapping[str, float]) -> str:
    """``helps`` when the paired interval of :func:`paired_difference` lies above zero, ``hurts`` when below,
    else ``no clear difference``.
    """
    if difference["ci_low"] > 0:
        return "helps"
    if difference["ci_high"] < 0:
        return "hurts"
    return "no clear difference"


def accuracy_by_modality(knn: pd.DataFrame) -> pd.DataFrame:
    """:func:`comparison_table` as one row per modality (and ``all``), one column per feature set, plus chance."""
    accuracy = knn.pivot(index=MODALITY, columns="features", values="accuracy")
    return accuracy.join(knn.groupby(MODALITY)["chance"].first().rename("chance"))


def describe_check(knn: pd.DataFrame, difference: Mapping[str, float]) -> str:
    """The check's result in a sentence: the accuracies over all held-out wells and the paired difference."""
    overall = knn[knn[MODALITY] == "all"].set_index("features")
    verdict = {
        "helps": "**it helps**.",
        "hurts": "**it hurts**.",
        "no clear difference": "**no clear difference from random initialisation**.",
    }
    return (
        f"Over all {int(overall['n_wells'].iloc[0])} held-out treated wells the pre-trained encoder is right for "
        f"{overall.loc['pre-trained', 'accuracy']:.1%}, the same encoder at random initialisation for "
        f"{overall.loc['random init', 'accuracy']:.1%} and pixel statistics for "
        f"{overall.loc['pixel statistics', 'accuracy']:.1%} (chance {overall['chance'].iloc[0]:.1%}). "
        f"Pre-training changes the accuracy by {difference['mean_difference']:+.1%} "
        f"(95% paired-bootstrap interval {difference['ci_low']:+.1%} to {difference['ci_high']:+.1%}): "
        + verdict[pretraining_verdict(difference)]
    )
