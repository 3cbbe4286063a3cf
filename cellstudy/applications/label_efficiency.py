"""Label efficiency (claim C1): accuracy on held-out plates against the share of labelled training wells.

Wells of a screen are classified by a label (by default the target gene of CRISPR guides; or the
perturbation, ``Metadata_broad_sample``), with and without self-supervised pre-training:

1. **Split** (:func:`held_out_plates`): per condition (modality, cell type, time point) ``test_plates``
   plates are drawn with the seed and held out. Training wells come from the other plates only, so no
   test plate (nor its plate effect) is seen in training. Test wells whose label has no training well
   are not scored.
2. **Subsample** (:func:`label_subsample`): of every class with ``n`` training wells the first
   ``ceil(fraction * n)`` of a seeded random order are kept. Every class keeps at least one well, and a
   smaller fraction's wells are a subset of a larger one's (nested learning curves). With few wells per
   class, small fractions coincide (1 % and 10 % of 6 wells are both 1 well): ``n_train_wells`` in the
   results says how many wells each point really used.
3. **Two regimes, two encoders** (the pre-trained encoder and the same architecture at random
   initialisation, :func:`cellstudy.profiling.embed.random_init_encoder`):

   - *linear probe* (:func:`linear_probe`): logistic regression on frozen well embeddings (the mean of
     the well's tile embeddings, normalised per plate to its negative controls by default), features
     standardised on the training wells;
   - *fine-tune* (:func:`fine_tune`): encoder plus a linear head trained end to end on the tiles of the
     training wells, each tile with its well's label; a well is predicted by the mean of its tiles'
     logits (:func:`well_logits`). The random-init encoder fine-tuned is the same ViT trained from scratch.

4. **Scores** on the test wells: accuracy and macro-F1 (scikit-learn).

Tiles are those of the embedding stage (:mod:`cellstudy.profiling.embed`: the encoder's crop size, the cell-content
filter, normalised as in pre-training), drawn once and shared by both regimes. They are held as their places in
the fields (:class:`TileSet`) and read, and normalised to float32, a batch at a time: memory grows with the batch,
not with the screen (float32 tiles of the ``full`` run size's CRISPR plates would take about 24 GB). Runs whose
training wells are identical (coinciding fractions) are computed once. Same seeds, same numbers.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm import tqdm

from cellstudy.columns import GENE, MODALITY, NEGCON, PLATE
from cellstudy.data.fieldstore import FIELD_KEY, FieldStore
from cellstudy.data.images import CHANNELS
from cellstudy.evaluation.probe import CONDITION, PER_PLATE
from cellstudy.models.vit import ViTEncoder
from cellstudy.profiling import embed
from cellstudy.profiling.profiles import PostProcessing, metadata_columns, postprocess
from cellstudy.training.crops import ChannelStats, normalise
from cellstudy.training.train import (
    PretrainedEncoder,
    cosine_schedule,
    load_encoder,
    parameter_groups,
    resolve_device,
)

LABEL_FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.0)
"""Shares of the training wells whose labels are used."""
ENCODERS = ("pre-trained", "random init")
"""Values of the ``method`` column: the pre-trained encoder and the same architecture at random initialisation."""
LINEAR_PROBE, FINE_TUNE = "linear probe", "fine-tune"
"""Values of the ``regime`` column."""
RESULT_COLUMNS = [
    "method",
    "regime",
    "label_fraction",
    "seed",
    "accuracy",
    "macro_f1",
    "n_train_wells",
    "n_test_wells",
    "n_classes",
]
"""Columns of :func:`label_efficiency`'s table, one row per method, regime, fraction and seed."""


@dataclass(frozen=True)
class FineTuning:
    """Settings of end-to-end fine-tuning (:func:`fine_tune`).

    Parameters
    ----------
    steps
        Optimizer steps, whatever the number of training wells (equal compute at every label fraction).
    batch_size
        Tiles per step, drawn epoch by epoch in a seeded random order.
    lr, head_lr
        Peak learning rates (after the linear warm-up) of the encoder and of the zero-initialised head. A
        short run needs a fast head: with one rate of 1e-3 for both, 30 steps left the 56-gene test near chance.
    min_lr
        Learning rate of both at the end of the cosine decay.
    warmup_steps
        Linear learning-rate warm-up from 0.
    weight_decay
        AdamW weight decay (not on biases, norms, embeddings and tokens: :func:`cellstudy.training.train.parameter_groups`).
    flips
        Augment each tile with a random one of the 8 flips and 90-degree rotations.
    predict_batch_size
        Tiles per forward pass when predicting (the predictions do not depend on it).
    device
        ``"auto"`` (a GPU if CUDA is available, else the CPU), ``"cpu"`` or ``"cuda"``: where the classifier is
        trained and run (and, in :func:`label_efficiency`, where the frozen encoders embed the tiles). Results on the CPU are deterministic; on a GPU they may differ in the last digits.
    """

    steps: int = 30
    batch_size: int = 32
    lr: float = 3.0e-4
    head_lr: float = 1.0e-2
    min_lr: float = 1.0e-6
    warmup_steps: int = 3
    weight_decay: float = 0.05
    flips: bool = True
    predict_batch_size: int = 256
    device: str = "auto"


@dataclass(frozen=True)
class LabelEfficiencyConfig:
    """What :func:`label_efficiency` measures, and how.

    Parameters
    ----------
    label
        Column holding the class of a well (:data:`GENE` or :data:`SAMPLE`). Negative
        controls and wells without a label are not classified (controls still normalise the probe's profiles).
    modalities
        ``Metadata_modality`` values whose wells take part (CRISPR by default: one target gene per guide
        and the strongest genetic phenotypes).
    fractions
        Shares of the training wells whose labels are used, each in (0, 1].
    seeds
        One repetition per seed; the seed draws the held-out plates, the label subsample, the fine-tuning
        head's batches and augmentations.
    test_plates
        Plates held out per condition (each condition needs at least one more).
    condition
        Columns whose combination defines a set of replicate plates.
    tiles_per_field
        Cell-filtered tiles kept per field (a seeded draw; ``None``: all), for both regimes.
    tile_seed
        Seed of that draw (the same tiles for every seed of the experiment).
    random_init_seed
        Seed of the random-init encoder (the training seed, 0 by default, gives pre-training's own starting point).
    embed_batch_size
        Tiles per encoder call when embedding (the embeddings do not depend on it).
    probe_postprocessing
        Applied to the well embeddings before the linear probe (default: per-plate MAD-robustize to the
        plate's negative controls, which removes plate effects of unseen plates without using labels);
        ``None`` uses them as they are.
    probe_c
        Inverse L2 regularisation strength of the logistic regression (scikit-learn's ``C``).
    probe_max_iter
        Iterations of the logistic regression's solver.
    fine_tuning
        Settings of the fine-tuning regime.
    """

    label: str = GENE
    modalities: tuple[str, ...] = ("crispr",)
    fractions: tuple[float, ...] = LABEL_FRACTIONS
    seeds: tuple[int, ...] = (0, 1, 2)
    test_plates: int = 1
    condition: tuple[str, ...] = CONDITION
    tiles_per_field: int | None = 4
    tile_seed: int = 0
    random_init_seed: int = 0
    embed_batch_size: int = 256
    probe_postprocessing: PostProcessing | None = PER_PLATE
    probe_c: float = 1.0
    probe_max_iter: int = 2000
    fine_tuning: FineTuning = field(default_factory=FineTuning)

    def __post_init__(self) -> None:
        bad = [fraction for fraction in self.fractions if not 0.0 < fraction <= 1.0]
        if bad or not self.fractions:
            raise ValueError(f"label fractions must be in (0, 1], got {list(self.fractions)}")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if self.test_plates < 1:
            raise ValueError(f"test_plates must be at least 1, got {self.test_plates}")


# --------------------------------------------------------------------------- split and subsample


def held_out_plates(
    wells: pd.DataFrame, seed: int, test_plates: int = 1, condition: Sequence[str] = CONDITION
) -> pd.Series:
    """Boolean per well: whether its plate is held out for testing.

    Per condition (a combination of the ``condition`` columns), ``test_plates`` of its plates (sorted by
    name) are drawn without replacement with ``seed``.

    Raises
    ------
    ValueError
        A column is missing, or a condition has no more than ``test_plates`` plates (named in the message).
    """
    missing = [column for column in [PLATE, *condition] if column not in wells.columns]
    if missing:
        raise ValueError(f"wells lack column(s) {missing}")
    rng = np.random.default_rng(seed)
    held_out: list[str] = []
    for key, group in wells.groupby(list(condition), sort=True, dropna=False):
        plates = sorted(group[PLATE].unique())
        if len(plates) <= test_plates:
            raise ValueError(
                f"condition {dict(zip(condition, key))} has {len(plates)} plate(s) {plates}; "
                f"holding out {test_plates} needs at least {test_plates + 1}"
            )
        held_out.extend(rng.choice(plates, test_plates, replace=False))
    return wells[PLATE].isin(held_out)


def label_subsample(labels: Sequence, fraction: float, seed: int) -> np.ndarray:
    """Positions of a stratified, nested subsample: per class, the first ``ceil(fraction * n_class)`` of its
    positions in a random order drawn with ``seed``.

    Every class keeps at least one position; a smaller fraction's positions are a subset of a larger one's
    (same seed). Returned sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        positions = rng.permutation(np.flatnonzero(labels == label))
        chosen.append(positions[: math.ceil(fraction * len(positions))])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=int)


# --------------------------------------------------------------------------- tiles and embeddings


class TileSet:
    """Tiles of a field table, held as their places in its fields and read a batch at a time.

    ``tiles[rows]`` (an index array, a slice or an integer) cuts the tiles out of their fields, read as a
    :class:`~cellstudy.data.fieldstore.FieldStore` reads them (memory-mapped from the decoded field store where the
    table names decoded files, else decoded from the TIFFs), each field once per call, and returns them normalised
    as the encoder's pre-training normalised its crops: ``(B, C, size, size)`` float32, equal to the tiles of
    :func:`cellstudy.profiling.embed.field_tiles` bit for bit. Only the places are kept (:attr:`nbytes`), so the
    memory of a batch is the batch's, whatever the number of tiles.

    Parameters
    ----------
    fields
        The field table the tiles are cut from.
    field_rows, corners
        ``(N,)`` row of ``fields`` and ``(N, 2)`` top-left corner (y, x) of each tile.
    size
        Tile side in pixels.
    stats, standardise
        Normalisation (:func:`cellstudy.training.crops.normalise`).
    """

    def __init__(
        self,
        fields: pd.DataFrame,
        field_rows: np.ndarray,
        corners: np.ndarray,
        size: int,
        stats: ChannelStats,
        standardise: str,
    ) -> None:
        self.store = FieldStore(fields, progress=False)
        self.field_rows = np.asarray(field_rows, dtype=np.int64)
        self.corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
        if len(self.corners) != len(self.field_rows):
            raise ValueError(f"{len(self.field_rows)} field rows but {len(self.corners)} corners")
        self.size, self.stats, self.standardise = size, stats, standardise

    def __len__(self) -> int:
        return len(self.field_rows)

    @property
    def nbytes(self) -> int:
        """Bytes of the tiles' places: what the set holds, whatever the tiles' size."""
        return self.field_rows.nbytes + self.corners.nbytes

    def raw(self, rows: np.ndarray | slice | int) -> np.ndarray:
        """The tiles ``rows`` as they are in their fields: ``(B, 5, size, size)`` uint16."""
        rows = np.atleast_1d(np.arange(len(self))[rows])
        field_rows = self.field_rows[rows]
        out = np.empty((len(rows), len(CHANNELS), self.size, self.size), dtype=np.uint16)
        for field_row in np.unique(field_rows):
            image = self.store[int(field_row)]
            for position in np.flatnonzero(field_rows == field_row):
                top, left = self.corners[rows[position]]
                out[position] = image[:, top : top + self.size, left : left + self.size]
        return out

    def __getitem__(self, rows: np.ndarray | slice | int) -> np.ndarray:
        """The tiles ``rows``, normalised: ``(B, C, size, size)`` float32."""
        return normalise(self.raw(rows), self.stats, self.standardise)


class WellTiles(NamedTuple):
    """The tiles of a set of wells.

    Attributes
    ----------
    wells
        One row per well (a (folder, well) pair, in order of first appearance): its ``Metadata_*`` columns.
    tiles
        The ``N`` tiles, read and normalised as in the encoder's pre-training a batch at a time (:class:`TileSet`).
    well_index
        ``(N,)`` row of ``wells`` each tile comes from.
    """

    wells: pd.DataFrame
    tiles: TileSet
    well_index: np.ndarray


def load_well_tiles(
    fields: pd.DataFrame,
    model: PretrainedEncoder,
    tiles_per_field: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> WellTiles:
    """The tiles :func:`cellstudy.profiling.embed.embed` would embed for a field table (same filter, draw and normalisation).

    ``fields`` has ``folder``, ``well``, ``field``, ``Metadata_*`` and optionally :data:`cellstudy.data.images.LAYOUT`
    columns; ``tiles_per_field`` and ``seed`` are :func:`~cellstudy.profiling.embed.embed_fields`'
    ``max_tiles_per_field`` and ``seed``. Each field is read once here, to find its tiles; only their places are
    kept (:class:`TileSet`).
    """
    missing = sorted(set(FIELD_KEY) - set(fields.columns))
    if missing:
        raise ValueError(f"field table lacks column(s) {missing}")
    fields = fields.reset_index(drop=True)
    field_wells = fields.groupby(["folder", "well"], sort=False).ngroup().to_numpy()
    size = model.crops.global_size
    places = [
        (np.full(len(part.corners), part.row), part.corners)
        for part in embed.field_tiles(fields, None, model.crops, size, tiles_per_field, seed, progress)
    ]
    field_rows = np.concatenate([rows for rows, _ in places]) if places else np.empty(0, dtype=np.int64)
    corners = np.concatenate([corners for _, corners in places]) if places else np.empty((0, 2), dtype=np.int64)
    tiles = TileSet(fields, field_rows, corners, size, model.stats, model.crops.standardise)
    wells = fields.drop_duplicates(["folder", "well"])[metadata_columns(fields)].reset_index(drop=True)
    return WellTiles(wells, tiles, field_wells[tiles.field_rows])


def tile_embeddings(
    model: PretrainedEncoder,
    tiles: np.ndarray | TileSet,
    pooling: str | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """Frozen-encoder features ``(N, D)`` of normalised tiles (pooling: :data:`cellstudy.profiling.embed.DEFAULT_POOLING`),
    ``batch_size`` tiles read at a time.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    featuriser = embed.encoder_featuriser(model.encoder, pooling or embed.DEFAULT_POOLING[model.method])
    starts = range(0, len(tiles), batch_size)
    batches = tqdm(starts, desc="embedding tiles", unit="batch", leave=False, disable=not progress)
    return np.concatenate([featuriser.features(tiles[start : start + batch_size]) for start in batches])


def well_profiles(wells: pd.DataFrame, features: np.ndarray, well_index: np.ndarray) -> pd.DataFrame:
    """Well metadata with the mean feature vector of each well's tiles (``emb_0000``... columns)."""
    columns = [f"{embed.EMBEDDING_PREFIX}{i:04d}" for i in range(features.shape[1])]
    means = pd.DataFrame(features, columns=columns).groupby(well_index).mean().reindex(range(len(wells)))
    return pd.concat([wells.reset_index(drop=True), means], axis=1)


# --------------------------------------------------------------------------- the two regimes


def linear_probe(
    train_features: np.ndarray, train_labels: Sequence, test_features: np.ndarray, c: float = 1.0, max_iter: int = 2000
) -> np.ndarray:
    """Predicted labels of ``test_features`` by a logistic regression (L2, ``C = c``) fit on standardised
    training features (mean and scale of the training rows).

    BLAS runs on one thread: at these sizes more threads only add overhead (tenfold and more when other
    processes share the cores), and the solver's path then does not depend on the thread count.
    """
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "The number of unique classes", UserWarning
        )  # one well per class is by design
        return model.fit(train_features, np.asarray(train_labels)).predict(test_features)


class TileClassifier(nn.Module):
    """An encoder with a linear head on its pooled output (``pooling``: ``"cls"`` or ``"mean"``)."""

    def __init__(self, encoder: ViTEncoder, n_classes: int, pooling: str) -> None:
        super().__init__()
        if pooling not in embed.POOLINGS:
            raise ValueError(f"pooling must be one of {embed.POOLINGS}, got {pooling!r}")
        self.encoder, self.pooling = encoder, pooling
        self.head = nn.Linear(encoder.embed_dim, n_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` of tiles ``(B, C, s, s)``."""
        cls, mean = self.encoder.pooled_features(tiles)
        return self.head(cls if self.pooling == "cls" else mean)


def random_flips(tiles: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each tile under a random one of the 8 flips and 90-degree rotations."""
    turns, mirrors = rng.integers(4, size=len(tiles)), rng.random(len(tiles)) < 0.5
    out = [torch.rot90(tile, int(k), dims=(1, 2)) for tile, k in zip(tiles, turns)]
    return torch.stack([tile.flip(2) if mirror else tile for tile, mirror in zip(out, mirrors)])


def batch_order(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``(steps, batch_size)`` indices into ``n`` items: consecutive random permutations, cut into batches."""
    epochs = math.ceil(steps * batch_size / n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[: steps * batch_size].reshape(steps, -1)


def fine_tune(
    encoder: ViTEncoder,
    tiles: np.ndarray | TileSet,
    labels: np.ndarray,
    n_classes: int,
    pooling: str,
    config: FineTuning = FineTuning(),
    seed: int = 0,
    progress: bool = True,
    rows: np.ndarray | None = None,
) -> TileClassifier:
    """A copy of ``encoder`` with a zero-initialised linear head, trained end to end on labelled tiles.

    Parameters
    ----------
    encoder
        Starting weights (left unchanged).
    tiles, labels
        ``(N, C, s, s)`` normalised tiles (an array, or a :class:`TileSet` that reads them a batch at a time) and
        the class codes in ``[0, n_classes)`` of the tiles trained on.
    rows
        The tiles trained on, as rows of ``tiles`` (default: all), read a batch at a time so that a subset
        of the tiles is never copied whole.
    pooling
        Token pooling the head reads (:data:`cellstudy.profiling.embed.POOLINGS`).
    config
        Steps, batch, learning-rate schedule, weight decay, augmentation.
    seed
        Seeds batch order and augmentation (the global random state is left untouched).

    Returns
    -------
    The trained classifier, in eval mode, on ``config.device``.
    """
    rng = np.random.default_rng(seed)
    device = resolve_device(config.device, 0)
    model = TileClassifier(_copy_encoder(encoder, device), n_classes, pooling).to(device).train()
    groups = [
        {**group, "peak_lr": peak}
        for part, peak in ((model.encoder, config.lr), (model.head, config.head_lr))
        for group in parameter_groups(part)
    ]
    optimizer = torch.optim.AdamW(groups, lr=0.0)
    rows = np.arange(len(tiles)) if rows is None else rows
    order = batch_order(len(rows), config.steps, config.batch_size, rng)
    targets = torch.as_tensor(labels, dtype=torch.long, device=device)
    for step, batch in enumerate(tqdm(order, desc="fine-tuning", unit="step", leave=False, disable=not progress)):
        for group in optimizer.param_groups:
            group["lr"] = cosine_schedule(step, config.steps, group["peak_lr"], config.min_lr, config.warmup_steps)
            group["weight_decay"] = config.weight_decay * group["apply_decay"]
        inputs = torch.from_numpy(tiles[rows[batch]])
        if config.flips:
            inputs = random_flips(inputs, rng)
        loss = nn.functional.cross_entropy(model(inputs.to(device)), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def _copy_encoder(encoder: ViTEncoder, device: torch.device) -> ViTEncoder:
    """A trainable copy of ``encoder`` on ``device`` (the original, and its device, untouched)."""
    return copy.deepcopy(encoder).to(device).train().requires_grad_(True)


@torch.inference_mode()
def well_logits(
    classifier: TileClassifier,
    tiles: np.ndarray | TileSet,
    well_index: np.ndarray,
    n_wells: int,
    batch_size: int = 256,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """``(n_wells, n_classes)`` mean logits of each well's tiles (``well_index``: the well of each tile scored), the
    classifier run on its own device; ``tiles``: an array or a :class:`TileSet`; ``rows``: the tiles scored, as rows
    of ``tiles`` (default: all), read a batch at a time.
    """
    device = classifier.head.weight.device
    rows = np.arange(len(tiles)) if rows is None else rows
    logits = torch.cat(
        [
            classifier(torch.from_numpy(tiles[rows[start : start + batch_size]]).to(device)).float().cpu()
            for start in range(0, len(rows), batch_size)
        ]
    ).numpy()
    sums = np.zeros((n_wells, logits.shape[1]))
    np.add.at(sums, well_index, logits)
    return sums / np.bincount(well_index, minlength=n_wells)[:, None]


def classification_scores(truth: Sequence, predicted: Sequence) -> dict[str, float]:
    """Accuracy and macro-F1 (mean F1 over the classes in ``truth`` or ``predicted``), with scikit-learn."""
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


# --------------------------------------------------------------------------- the experiment


def labelled_fields(field_table: pd.DataFrame, config: LabelEfficiencyConfig) -> pd.DataFrame:
    """The fields of ``config.modalities`` (treated wells and their plates' negative controls).

    Raises
    ------
    ValueError
        A needed column is missing, or no well of those modalities has a label.
    """
    needed = [config.label, MODALITY, NEGCON, PLATE, *config.condition]
    missing = [column for column in dict.fromkeys(needed) if column not in field_table.columns]
    if missing:
        raise ValueError(f"field table lacks column(s) {missing}")
    fields = field_table[field_table[MODALITY].isin(config.modalities)]
    if not (~fields[NEGCON] & fields[config.label].notna()).any():
        raise ValueError(f"no well of modalities {list(config.modalities)} has a {config.label!r} label")
    return fields.reset_index(drop=True)


class _Split(NamedTuple):
    """Positions (into the well table) of a seed's training pool and scored test wells."""

    train: np.ndarray
    test: np.ndarray


def _split(wells: pd.DataFrame, config: LabelEfficiencyConfig, seed: int) -> _Split:
    """Training pool (labelled wells of the kept plates) and test wells (labelled, held-out plates, known class)."""
    labelled = (~wells[NEGCON] & wells[config.label].notna()).to_numpy()
    test_plate = held_out_plates(wells, seed, config.test_plates, config.condition).to_numpy()
    train = np.flatnonzero(labelled & ~test_plate)
    known = wells[config.label].isin(wells[config.label].iloc[train]).to_numpy()
    return _Split(train, np.flatnonzero(labelled & test_plate & known))


def label_efficiency(
    encoder_path: str | os.PathLike,
    field_table: pd.DataFrame,
    config: LabelEfficiencyConfig = LabelEfficiencyConfig(),
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy and macro-F1 on held-out plates of both regimes and both encoders, per label fraction and seed.

    Parameters
    ----------
    encoder_path
        ``encoder.pt`` of a pre-training run (:func:`cellstudy.training.train.train`).
    field_table
        One row per field (``folder``, ``well``, ``field``, ``Metadata_*``, optionally
        :data:`cellstudy.data.images.LAYOUT`), e.g. a simulated screen's
        :meth:`~cellstudy.simulation.simulate.SimulationResult.field_table`.
    config
        Label, wells, fractions, seeds and the settings of both regimes.
    progress
        Show progress bars.

    Returns
    -------
    :data:`RESULT_COLUMNS`: one row per method (:data:`ENCODERS`), regime, label fraction and seed.
    """
    device = resolve_device(config.fine_tuning.device, 0)  # both regimes run there
    pretrained = load_encoder(encoder_path, device)
    encoders = {
        ENCODERS[0]: pretrained,
        ENCODERS[1]: embed.random_init_encoder(encoder_path, config.random_init_seed, device=device),
    }
    pooling = embed.DEFAULT_POOLING[pretrained.method]
    loaded = load_well_tiles(
        labelled_fields(field_table, config), pretrained, config.tiles_per_field, config.tile_seed, progress
    )
    wells = loaded.wells
    profiles = {}
    for name, model in encoders.items():
        table = well_profiles(
            wells, tile_embeddings(model, loaded.tiles, pooling, config.embed_batch_size, progress), loaded.well_index
        )
        profiles[name] = _probe_features(table, config.probe_postprocessing)
    labels = wells[config.label].to_numpy()
    cache: dict[tuple, dict[str, float]] = {}
    rows = []
    runs = [(seed, fraction, name) for seed in config.seeds for fraction in config.fractions for name in encoders]
    for seed, fraction, name in tqdm(runs, desc="label efficiency", unit="run", disable=not progress):
        split = _split(wells, config, seed)
        train = split.train[label_subsample(labels[split.train], fraction, seed)]
        classes, codes = np.unique(labels[train], return_inverse=True)
        counts = {"n_train_wells": len(train), "n_test_wells": len(split.test), "n_classes": len(classes)}
        key = (name, seed, tuple(train))
        if key not in cache:
            predicted_probe = linear_probe(
                profiles[name][train], labels[train], profiles[name][split.test], config.probe_c, config.probe_max_iter
            )
            cache[key] = {
                LINEAR_PROBE: classification_scores(labels[split.test], predicted_probe),
                FINE_TUNE: _fine_tune_scores(
                    encoders[name].encoder,
                    loaded,
                    train,
                    split.test,
                    codes,
                    classes,
                    labels,
                    pooling,
                    config.fine_tuning,
                    seed,
                    progress,
                ),
            }
        for regime, scores in cache[key].items():
            rows.append(
                {"method": name, "regime": regime, "label_fraction": fraction, "seed": seed, **scores, **counts}
            )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _probe_features(profiles: pd.DataFrame, postprocessing: PostProcessing | None) -> np.ndarray:
    """Feature matrix of well profiles after ``postprocessing``, one row per well in table order.

    Raises
    ------
    ValueError
        Post-processing dropped a well (its features were not finite).
    """
    processed = profiles if postprocessing is None else postprocess(profiles, postprocessing)
    if len(processed) != len(profiles):
        raise ValueError(f"post-processing dropped {len(profiles) - len(processed)} well(s) with non-finite features")
    return processed.drop(columns=metadata_columns(processed)).to_numpy(dtype=float)


def _fine_tune_scores(
    encoder: ViTEncoder,
    loaded: WellTiles,
    train: np.ndarray,
    test: np.ndarray,
    codes: np.ndarray,
    classes: np.ndarray,
    labels: np.ndarray,
    pooling: str,
    config: FineTuning,
    seed: int,
    progress: bool,
) -> dict[str, float]:
    """Fine-tune on the tiles of the ``train`` wells (codes: their class codes), score the ``test`` wells.

    Both read their tiles from ``loaded.tiles`` by row, a batch at a time (:class:`TileSet`).
    """
    code_of_well = np.full(len(loaded.wells), -1)
    code_of_well[train] = codes
    in_train = np.flatnonzero(np.isin(loaded.well_index, train))
    in_test = np.flatnonzero(np.isin(loaded.well_index, test))
    train_codes = code_of_well[loaded.well_index[in_train]]
    classifier = fine_tune(encoder, loaded.tiles, train_codes, len(classes), pooling, config, seed, progress, in_train)
    test_position = np.searchsorted(test, loaded.well_index[in_test])  # test is sorted
    logits = well_logits(classifier, loaded.tiles, test_position, len(test), config.predict_batch_size, rows=in_test)
    return classification_scores(labels[test], classes[logits.argmax(axis=1)])


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of accuracy and macro-F1 per method, regime and label fraction,
    with the mean numbers of training and test wells and the number of seeds.
    """
    return (
        results.groupby(["regime", "method", "label_fraction"], sort=True)
        .agg(
            accuracy_mean=("accuracy", "mean"),
            accuracy_sd=("accuracy", "std"),
            macro_f1_mean=("macro_f1", "mean"),
            macro_f1_sd=("macro_f1", "std"),
            n_train_wells=("n_train_wells", "mean"),
            n_test_wells=("n_test_wells", "mean"),
            n_seeds=("seed", "nunique"),
        )
        .reset_index()
    )


def describe(
    summary: pd.DataFrame,
    encoders: Sequence[str],
    regimes: Sequence[str],
    fractions: Sequence[float],
    labels: Mapping[str, str],
    data_label: str,
    n_seeds: int,
) -> str:
    """Pre-trained against random-init accuracy (mean ± SD over seeds) at the fewest and at all labels."""

    def accuracy_at(method: str, regime: str, state: str, fraction: float) -> str:
        row = summary[
            (summary["encoder"] == method)
            & (summary["regime"] == regime)
            & (summary["method"] == state)
            & (summary["label_fraction"] == fraction)
        ].iloc[0]
        return f"{row['accuracy_mean']:.2f} ± {np.nan_to_num(row['accuracy_sd']):.2f}"

    smallest, largest = min(fractions), max(fractions)
    wells_at = summary.groupby("label_fraction")["n_train_wells"].mean()
    return (
        f"With the fewest labels ({smallest:.0%}: {wells_at[smallest]:.0f} training wells) and with all "
        f"({largest:.0%}: {wells_at[largest]:.0f} wells), accuracy of pre-trained vs random initialisation "
        f"({data_label} data, {n_seeds} seed(s)):\n\n"
        + "\n".join(
            f"- {labels[m]}, {regime}: {accuracy_at(m, regime, 'pre-trained', smallest)} vs "
            f"{accuracy_at(m, regime, 'random init', smallest)} at {smallest:.0%}; "
            f"{accuracy_at(m, regime, 'pre-trained', largest)} vs {accuracy_at(m, regime, 'random init', largest)} "
            f"at {largest:.0%}"
            for m in encoders
            for regime in regimes
        )
    )


def settings_table(config: LabelEfficiencyConfig) -> pd.DataFrame:
    """The experiment's settings as the book reports them (``setting``, ``value``)."""
    fine_tuning = config.fine_tuning
    return pd.DataFrame(
        [
            {"setting": "label", "value": f"{config.label} of {', '.join(config.modalities)} wells"},
            {"setting": "label fractions", "value": ", ".join(f"{f:.0%}" for f in config.fractions)},
            {"setting": "seeds", "value": len(config.seeds)},
            {"setting": "held-out plates per condition", "value": config.test_plates},
            {"setting": "tiles per field", "value": config.tiles_per_field or "all"},
            {
                "setting": "fine-tuning",
                "value": f"{fine_tuning.steps} steps × {fine_tuning.batch_size} tiles, peak "
                f"learning rate {fine_tuning.lr:g} (encoder), {fine_tuning.head_lr:g} (head)",
            },
        ]
    )
