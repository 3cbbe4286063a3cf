"""Simulated CPJUMP1: Cell Painting fields rendered from latent phenotypes on the real design.

:func:`render_field` draws one 5-channel field of view (DNA, ER, RNA, AGP,
Mito, as :data:`cellstudy.data.images.CHANNELS`) of cells whose morphology follows
a latent phenotype (:mod:`cellstudy.simulation.phenotypes`): cells with a nucleus
(granular chromatin, nucleoli), a perinuclear reticular ER with a bright
nuclear envelope, cytoplasmic RNA, cortical actin, stress fibres and a
perinuclear Golgi (AGP), tubular or punctate mitochondria, rounded bright
mitotic cells and binucleate cells; then the microscope: blur, out-of-focus
haze, vignetting, channel gains, background, shot and read noise.

:func:`simulate` lays such fields out on the real CPJUMP1 design: a subset of
genes with their real compounds, both CRISPR guides and the ORF, negative
controls, at their real plate positions on replicate plates per modality, cell
type and time point; it adds technical variation (plate and well intensity,
vignetting, edge wells, well-to-well biological noise, cell density) and writes
the images in the Cell Painting Gallery's Phenix naming, the well table and the
planted ground truth. The result is deterministic: every well draws from its
own random stream keyed by the seed, plate and well, whatever the number of
worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

from cellstudy.columns import (
    CELL_TYPE,
    COL,
    CONTROL_TYPE,
    GENE,
    METADATA_PREFIX,
    MODALITY,
    NAME,
    NEGCON,
    PERT_TYPE,
    PLATE,
    ROW,
    SAMPLE,
    SOURCE_PLATE,
    TARGET_LIST,
    TIMEPOINT,
    WELL,
)
from cellstudy.data import cpjump1
from cellstudy.data.images import CHANNELS, CPJUMP1_CHANNELS, write_field
from cellstudy.files import atomic_path
from cellstudy.parallel import map_with_progress
from cellstudy.simulation.phenotypes import (
    AXES,
    AXIS_GAINS,
    AXIS_NAMES,
    N_AXES,
    PhenotypeConfig,
    compound_gene_truth,
    keyed_rng,
    latent_columns,
    perturbation_phenotypes,
)

_OUTLINE_REACH = 1.0
"""Pixels beyond this elliptic distance from every cell centre are background."""
_AXIS = {name: index for index, name in enumerate(AXIS_NAMES)}


# --------------------------------------------------------------------------- cells and stains


@dataclass(frozen=True)
class CellType:
    """Unperturbed morphology of a cell line; lengths in CPJUMP1's native pixels.

    Attributes
    ----------
    nucleus_radii
        Semi-axes of the nucleus ellipse.
    cell_radii
        Semi-axes of the cell body before neighbours crowd it.
    density
        Cells per million native pixels (a 1080 × 1080 CPJUMP1 field has 1.17 million).
    clumping
        Contrast of the random colony map cells are seeded on (0: uniform).
    mitotic_fraction
        Share of rounded mitotic cells.
    binucleate_fraction
        Share of cells with two nuclei.
    punctate_fraction
        Share of mitochondrial signal in puncta rather than tubules.
    fibre_strength
        Stress-fibre signal relative to the cytoplasmic AGP signal.
    chromatin_contrast
        Relative amplitude of chromatin granularity in the DNA stain.
    nucleolus_radius
        Gaussian radius of a nucleolus.
    er_spread
        Decay length of ER density away from the nucleus.
    mito_spread
        Decay length of mitochondrial density away from the nucleus (longer on the Golgi side).
    golgi_width
        Radial width of the Golgi crescent next to the nucleus.
    golgi_angle
        Angular half-width (radians) of the Golgi crescent.
    """

    nucleus_radii: tuple[float, float] = (21.0, 14.0)
    cell_radii: tuple[float, float] = (52.0, 35.0)
    density: float = 85.0
    clumping: float = 6.0
    mitotic_fraction: float = 0.02
    binucleate_fraction: float = 0.015
    punctate_fraction: float = 0.25
    fibre_strength: float = 1.0
    chromatin_contrast: float = 0.22
    nucleolus_radius: float = 1.8
    er_spread: float = 14.0
    mito_spread: float = 13.0
    golgi_width: float = 4.0
    golgi_angle: float = 0.4


CELL_TYPES = {
    "U2OS": CellType(),
    "A549": CellType(
        nucleus_radii=(16.0, 12.5), cell_radii=(40.0, 32.0), density=150.0, clumping=3.0, fibre_strength=0.5
    ),
}
"""Baseline morphology per CPJUMP1 cell line. U2OS is measured on the real DMSO field (nucleus
43 × 28 pixels, about 100 cells per field); A549 (smaller, rounder, denser, fewer stress fibres)
is not calibrated: the sample data hold no A549 field."""


@dataclass(frozen=True)
class Staining:
    """Signal of each stain per compartment of an unperturbed cell (ADU above background).

    Defaults are set so that medians inside nuclei and cytoplasm (Otsu
    segmentation of DNA and RNA) approach those of the real CPJUMP1 U2OS DMSO
    field (``cpjump1/images/DMSO``).
    """

    dna_nucleus: float = 9500.0
    dna_cytoplasm: float = 150.0
    rna_nucleus: float = 4200.0
    rna_nucleoli: float = 9000.0
    rna_cytoplasm: float = 6000.0
    er_nucleus: float = 2000.0
    er_envelope: float = 1300.0
    er_cytoplasm: float = 5500.0
    agp_nucleus: float = 3200.0
    agp_cytoplasm: float = 2200.0
    agp_membrane: float = 1200.0
    agp_fibres: float = 1000.0
    agp_golgi: float = 11000.0
    mito_nucleus: float = 700.0
    mito_cytoplasm: float = 2200.0
    mitotic_brightness: float = 4.0
    """Multiplier of the cytoplasmic stains in rounded (thick) mitotic cells."""
    mitotic_dna_brightness: float = 2.5
    """Multiplier of the Hoechst signal of condensed mitotic chromatin."""
    cell_variability: float = 0.15
    """Log-normal cell-to-cell spread of each stain and size."""


@dataclass(frozen=True)
class Acquisition:
    """The microscope's and well's technical state for one field.

    Attributes
    ----------
    channel_gain
        Intensity multiplier per channel, in :data:`CHANNELS` order.
    background
        Camera offset and autofluorescence per channel (ADU).
    vignetting
        Relative intensity loss at the field corners.
    vignetting_centre
        Optical axis, relative to the field centre in field half-widths.
    haze
        Share of the signal spread as out-of-focus light.
    psf_sigma
        Gaussian blur of the optics (native pixels).
    photons_per_adu
        Conversion gain of a native pixel: shot noise has variance ``signal / photons_per_adu``
        (a binned pixel averages ``binning²`` of them).
    read_noise
        Camera read noise of a native pixel (ADU, standard deviation).
    density_factor
        Multiplier of the cell type's density (seeding and edge effects).
    """

    channel_gain: tuple[float, ...] = (1.0,) * len(CHANNELS)
    background: tuple[float, ...] = (575.0, 394.0, 603.0, 707.0, 1025.0)
    vignetting: float = 0.15
    vignetting_centre: tuple[float, float] = (0.0, 0.0)
    haze: float = 0.1
    psf_sigma: float = 1.4
    photons_per_adu: float = 1.0
    read_noise: float = 25.0
    density_factor: float = 1.0


class Field(NamedTuple):
    """A rendered field of view.

    Attributes
    ----------
    image
        (5, H, W) uint16 in :data:`CHANNELS` order.
    n_cells
        Cells with (part of) a nucleus in the field.
    nuclei
        (H, W) int32 label image of the planted nuclei: pixel value = cell number
        1..n_cells (a binucleate cell's two nuclei share it), 0 elsewhere.
    """

    image: np.ndarray
    n_cells: int
    nuclei: np.ndarray


@lru_cache(maxsize=8)
def _frequencies(height: int, width: int) -> np.ndarray:
    """Radial frequency (cycles per pixel) of each ``rfft2`` coefficient; infinite at zero."""
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    frequency[0, 0] = np.inf
    return frequency


def bandpass_noise(
    rng: np.random.Generator, shape: tuple[int, int], period_min: float, period_max: float
) -> np.ndarray:
    """Zero-mean, unit-variance noise with spatial periods mostly between ``period_min`` and ``period_max`` pixels.

    White noise filtered in Fourier space by a log-Gaussian ring centred on
    their geometric mean, one log-standard deviation wide at each period.
    """
    frequency = _frequencies(*shape)
    centre = 1.0 / np.sqrt(period_min * period_max)
    width = max(np.log(period_max / period_min) / 2.0, 0.1)
    spectrum = np.exp(-0.5 * (np.log(frequency / centre) / width) ** 2).astype(np.float32)
    noise = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32)) * spectrum, s=shape)
    return (noise / max(noise.std(), 1e-12)).astype(np.float32)


def place_cells(
    rng: np.random.Generator, n: int, extent: tuple[float, float], min_distance: float, colony_map: np.ndarray
) -> np.ndarray:
    """Up to ``n`` centres in ``[extent[0], extent[1])²``, at least ``min_distance`` apart.

    Candidates are uniform and kept with the probability ``colony_map`` (values
    in 0..1, indexed by the clipped candidate position), which forms colonies.
    Returns an (m, 2) array of (y, x), m ≤ n.
    """
    low, high = extent
    centres = np.empty((n, 2))
    count, limit = 0, 60 * n + 100
    candidates = rng.uniform(low, high, (limit, 2))
    keep = rng.random(limit)
    size = colony_map.shape[0]
    for candidate, draw in zip(candidates, keep):
        if count == n:
            break
        y, x = np.clip(candidate.astype(int), 0, size - 1)
        if draw > colony_map[y, x]:
            continue
        if count and np.min(np.sum((centres[:count] - candidate) ** 2, axis=1)) < min_distance**2:
            continue
        centres[count] = candidate
        count += 1
    return centres[:count]


MIN_CELL_TO_NUCLEUS = 1.5
"""Smallest ratio of cell to nucleus semi-axes (a swollen nucleus enlarges its cell)."""
MITOTIC_SHAPE = {"chromatin": (0.6, 0.4), "cell": 0.95}
"""Semi-axes of condensed mitotic chromatin and radius of the rounded mitotic cell, relative to the
geometric-mean nucleus radius of an interphase cell."""


def _logit_shift(base: float, shift: np.ndarray | float) -> np.ndarray:
    """``sigmoid(logit(base) + shift)``."""
    return 1.0 / (1.0 + np.exp(-(np.log(base / (1.0 - base)) + shift)))


class _Cells(NamedTuple):
    """Per-cell rendering parameters (sizes in field pixels); arrays of length n."""

    centres: np.ndarray
    nucleus_radii: np.ndarray  # (n, 2)
    cell_radii: np.ndarray  # (n, 2)
    mitotic: np.ndarray
    binucleate: np.ndarray
    stains: dict[str, np.ndarray]


def _cell_parameters(
    phenotype: np.ndarray,
    rng: np.random.Generator,
    centres: np.ndarray,
    cell_type: CellType,
    staining: Staining,
    scale: float,
    penetrance_sd: float,
) -> _Cells:
    """Draw every cell's sizes and stain levels from the well's phenotype, with cell-to-cell variation."""
    n = len(centres)
    effect = (
        phenotype[None, :] * AXIS_GAINS[None, :] * np.clip(1.0 + penetrance_sd * rng.standard_normal((n, 1)), 0.0, None)
    )

    def jitter(size: int | tuple[int, ...] = n) -> np.ndarray:
        return np.exp(staining.cell_variability * rng.standard_normal(size))

    def axis(name: str) -> np.ndarray:
        return effect[:, _AXIS[name]]

    mitotic = rng.random(n) < _logit_shift(cell_type.mitotic_fraction, axis("mitotic_arrest"))
    binucleate = ~mitotic & (rng.random(n) < _logit_shift(cell_type.binucleate_fraction, axis("multinucleation")))
    nucleus = scale * np.array(cell_type.nucleus_radii) * (jitter() * np.exp(axis("nuclear_size")))[:, None]
    stretch = np.exp(axis("cell_elongation") / 2.0)
    cell = (
        scale * np.array(cell_type.cell_radii) * (jitter() * np.exp(axis("cell_size")))[:, None] * jitter((n, 2)) ** 0.5
    )
    cell *= np.stack([stretch, 1.0 / stretch], axis=1)
    cell[binucleate] *= 1.35
    cell = np.maximum(cell, MIN_CELL_TO_NUCLEUS * nucleus)
    round_radius = np.sqrt(nucleus.prod(axis=1))
    nucleus[mitotic] = round_radius[mitotic, None] * MITOTIC_SHAPE["chromatin"]
    cell[mitotic] = round_radius[mitotic, None] * MITOTIC_SHAPE["cell"]
    nucleus[binucleate] *= 0.85
    stains = {
        "dna": staining.dna_nucleus
        * jitter()
        * np.exp(axis("nuclear_intensity"))
        * np.where(mitotic, staining.mitotic_dna_brightness, 1.0),
        "chromatin": cell_type.chromatin_contrast
        * jitter()
        * np.exp(axis("chromatin_texture"))
        * np.where(mitotic, 2.0, 1.0),
        "rna": staining.rna_cytoplasm * jitter() * np.exp(axis("rna_intensity")),
        "nucleoli": staining.rna_nucleoli * jitter() * np.exp(axis("nucleoli")),
        "nucleolus_radius": cell_type.nucleolus_radius * scale * np.exp(axis("nucleoli") / 2.0),
        "er": staining.er_cytoplasm * jitter(),
        "er_spread": cell_type.er_spread * scale * jitter() * np.exp(axis("er_spread")),
        "fibres": cell_type.fibre_strength * jitter() * np.exp(axis("actin_fibres")),
        "golgi_width": cell_type.golgi_width * scale * jitter() * np.exp(-axis("golgi_compaction")),
        "golgi_angle": cell_type.golgi_angle * jitter() * np.exp(-axis("golgi_compaction")),
        "mito": staining.mito_cytoplasm * jitter() * np.exp(axis("mito_mass")),
        "mito_spread": cell_type.mito_spread * scale * jitter() * np.exp(axis("mito_mass") / 2.0),
        "punctate": _logit_shift(cell_type.punctate_fraction, axis("mito_fragmentation")),
        "brightness": np.where(mitotic, staining.mitotic_brightness, 1.0) * jitter(),
    }
    return _Cells(centres, nucleus, cell, mitotic, binucleate, stains)


def _direction(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unit complex numbers ``exp(i theta)`` of the angle of (x, y) (1 at the origin)."""
    z = (x + 1j * y).astype(np.complex64)
    length = np.abs(z)
    return np.where(length > 0, z / np.maximum(length, 1e-12), 1.0)


def _outline(direction: np.ndarray, amplitudes: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Outline radius ``1 + sum_k a_k cos(k theta + phi_k)``, k = 2, 3, ..., from ``direction = exp(i theta)``."""
    coefficients = (amplitudes * np.exp(1j * phases)).astype(np.complex64)
    series = np.zeros_like(direction)
    for coefficient in coefficients[::-1]:
        series = (series + coefficient) * direction
    return 1.0 + (series * direction).real


class _Maps(NamedTuple):
    """Per-pixel geometry of a field, each (H, W)."""

    label: np.ndarray  # owning cell, 1-based; 0 background
    cell_distance: np.ndarray  # elliptic distance to own centre, 1 on the outline
    nucleus_distance: np.ndarray  # elliptic distance to nearest own nucleus, 1 on its outline
    outside_nucleus: np.ndarray  # approximate distance (pixels) outside the nucleus
    polarity: np.ndarray  # cosine of the angle to the cell's Golgi side, seen from the nucleus
    golgi: np.ndarray
    fibres: np.ndarray
    nucleoli: np.ndarray
    nuclei: np.ndarray  # nucleus labels


def _empty_maps(size: int) -> _Maps:
    """Maps of a field without cells."""
    shape = (size, size)
    return _Maps(
        np.zeros(shape, np.int32),
        np.full(shape, np.inf, np.float32),
        np.full(shape, 9.0, np.float32),
        np.full(shape, 1e3, np.float32),
        *(np.zeros(shape, np.float32) for _ in range(4)),
        np.zeros(shape, np.int32),
    )


def _paint_cells(cells: _Cells, size: int, rng: np.random.Generator, scale: float) -> _Maps:
    """Rasterise every cell in its bounding box; a pixel belongs to the cell with the smallest outline distance.

    Geometry beyond the outline distance is computed only for the pixels a cell
    wins so far (a later, closer cell overwrites them).
    """
    maps = _empty_maps(size)
    for index, ((cy, cx), nucleus, body, mitotic, binucleate) in enumerate(
        zip(cells.centres, cells.nucleus_radii, cells.cell_radii, cells.mitotic, cells.binucleate), start=1
    ):
        reach = int(np.ceil(1.35 * body.max())) + 2
        y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, size)
        x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
        angle = rng.uniform(0.0, np.pi)
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        roughness = (0.02 if mitotic else 0.22) / np.arange(1, 6)
        radial = np.hypot(u / body[0], v / body[1])
        cell_distance = radial / _outline(
            _direction(u / body[0], v / body[1]), rng.normal(0, roughness), rng.uniform(0, 2 * np.pi, 5)
        )
        wins = (cell_distance < _OUTLINE_REACH) & (cell_distance < maps.cell_distance[y0:y1, x0:x1])
        rows, cols = np.nonzero(wins)
        u, v = u[wins], v[wins]
        nucleus_distance, direction, nucleus_centres = _nuclei_geometry(rng, u, v, nucleus, body, binucleate)
        outside = (nucleus_distance - 1.0) * np.sqrt(nucleus.prod())
        polarity = (direction * np.exp(-1j * rng.uniform(-np.pi, np.pi))).real
        active = 0.0 if mitotic else 1.0
        golgi = active * _golgi(
            polarity, outside, cells.stains["golgi_width"][index - 1], cells.stains["golgi_angle"][index - 1]
        )
        fibres = active * _stress_fibres(rng, u, v, body, scale) * (1.0 - cell_distance[wins] ** 2)
        nucleoli = active * _nucleoli(
            rng, u, v, nucleus_distance, nucleus_centres, nucleus, cells.stains["nucleolus_radius"][index - 1]
        )
        pixels = (rows + y0, cols + x0)
        for target, value in zip(
            maps, (index, cell_distance[wins], nucleus_distance, outside, polarity, golgi, fibres, nucleoli)
        ):
            target[pixels] = value
        maps.nuclei[pixels] = np.where(nucleus_distance < 1.0, index, 0)
    return maps


def _nuclei_geometry(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, nucleus: np.ndarray, body: np.ndarray, binucleate: bool
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Elliptic distance to the nearest nucleus, the direction seen from its centre, and the nucleus centres.

    The nucleus sits slightly off the cell centre and tilted; a binucleate cell
    has two side by side along the cell's long axis.
    """
    offset = rng.normal(0.0, 0.12, 2) * (body - nucleus)
    tilt = rng.normal(0.0, 0.25)
    shifts = [(-0.95 * nucleus[0], 0.0), (0.95 * nucleus[0], 0.0)] if binucleate else [(0.0, 0.0)]
    centres = [(offset[0] + du, offset[1] + dv) for du, dv in shifts]
    distance = np.full(u.shape, np.inf, np.float32)
    direction = np.ones(u.shape, np.complex64)
    for nu, nv in centres:
        a = ((u - nu) * np.cos(tilt) + (v - nv) * np.sin(tilt)) / nucleus[0]
        b = (-(u - nu) * np.sin(tilt) + (v - nv) * np.cos(tilt)) / nucleus[1]
        towards = _direction(a, b)
        candidate = np.hypot(a, b) / _outline(towards, rng.normal(0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3))
        closer = candidate < distance
        distance = np.where(closer, candidate, distance)
        direction = np.where(closer, towards, direction)
    return distance, direction, centres


def _golgi(polarity: np.ndarray, outside: np.ndarray, width: float, angle: float) -> np.ndarray:
    """A perinuclear crescent towards ``polarity`` 1.

    Von Mises in angle (half-width ``angle`` radians), Gaussian of ``width`` pixels at ``width`` off the nucleus.
    """
    return np.exp((polarity - 1.0) / angle**2) * np.exp(-0.5 * ((outside - width) / width) ** 2)


def _stress_fibres(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, body: np.ndarray, scale: float, n: int = 7
) -> np.ndarray:
    """A few straight fibres roughly along the cell's long axis, of random strength (mean 0.6)."""
    fibres = np.zeros(u.shape, np.float32)
    width = max(0.9 * scale, 0.6)
    for offset, slope, strength in zip(
        rng.uniform(-0.9, 0.9, n) * body[1], rng.normal(0, 0.15, n), rng.exponential(0.6, n)
    ):
        fibres += strength * np.exp(-(((v - offset - slope * u) / width) ** 2))
    return fibres


def _nucleoli(
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    nucleus_distance: np.ndarray,
    centres: list[tuple[float, float]],
    nucleus: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Three or more (mean five) round nucleoli per nucleus, inside its inner 75%."""
    nucleoli = np.zeros(u.shape, np.float32)
    inside = nucleus_distance < 1.0
    u, v = u[inside], v[inside]
    spots = np.zeros(u.shape, np.float32)
    for nu, nv in centres:
        for _ in range(3 + rng.poisson(2.0)):
            r, phi = 0.75 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            size = radius * rng.uniform(0.7, 1.3)
            pu, pv = nu + r * nucleus[0] * np.cos(phi), nv + r * nucleus[1] * np.sin(phi)
            spots += rng.uniform(0.6, 1.0) * np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * size**2))
    nucleoli[inside] = np.minimum(spots, 1.0)
    return nucleoli


TEXTURE_PERIODS = {
    "chromatin": (3.0, 10.0),
    "reticulum": (3.5, 10.0),
    "tubules": (5.0, 12.0),
    "puncta": (2.5, 6.0),
    "golgi": (3.0, 7.0),
    "fine": (3.0, 30.0),
    "irregular": (6.0, 16.0),
}
"""Spatial periods (native pixels) of the field-wide textures: chromatin granules, ER network
(zero-crossings), mitochondrial tubules (zero-crossings) and puncta, Golgi stacks, cytoplasmic
unevenness, nucleolar irregularity."""
CYTOPLASM_THICKNESS = {"RNA": 30.0, "AGP": 40.0}
"""Decay length (native pixels) of the cell's thickness away from the nucleus, per stain it dims."""


def _textures(rng: np.random.Generator, size: int, scale: float) -> dict[str, np.ndarray]:
    """Field-wide band-passed noise for every sub-cellular texture of :data:`TEXTURE_PERIODS`."""
    return {
        name: bandpass_noise(rng, (size, size), low * scale, high * scale)
        for name, (low, high) in TEXTURE_PERIODS.items()
    }


def _membrane(label: np.ndarray) -> np.ndarray:
    """Cell borders: where neighbouring pixels belong to different cells, plus the free outline."""
    border = np.zeros(label.shape, np.float32)
    vertical = (label[1:] != label[:-1]).astype(np.float32)
    horizontal = (label[:, 1:] != label[:, :-1]).astype(np.float32)
    border[1:] += vertical
    border[:-1] += vertical
    border[:, 1:] += horizontal
    border[:, :-1] += horizontal
    return np.minimum(border, 1.0) * (label > 0)


def _stain(maps: _Maps, cells: _Cells, textures: dict[str, np.ndarray], staining: Staining, scale: float) -> np.ndarray:
    """Compose the five stains' signal (ADU above background, before optics) from geometry and cell parameters."""

    def per_pixel(name: str) -> np.ndarray:
        return np.concatenate([[0.0], cells.stains[name]]).astype(np.float32)[maps.label]

    inside = maps.label > 0
    cell_mask = np.clip((1.0 - maps.cell_distance) / 0.08, 0.0, 1.0)
    nucleus = 1.0 / (1.0 + np.exp(np.clip((maps.nucleus_distance - 1.0) / 0.05, -50, 50))) * inside
    cytoplasm = cell_mask * (1.0 - nucleus)
    outside = np.maximum(maps.outside_nucleus, 0.0)

    def thickness(length: np.ndarray | float) -> np.ndarray:
        return 0.25 + 0.75 * np.exp(-outside / length)

    brightness = per_pixel("brightness")
    dome = np.clip(1.15 - 0.3 * maps.nucleus_distance**2, 0.0, None)
    chromatin = 1.0 + per_pixel("chromatin") * textures["chromatin"]
    nucleoli = maps.nucleoli * np.clip(0.8 + 0.4 * textures["irregular"], 0.2, None)
    dna = per_pixel("dna") * nucleus * dome * chromatin * (1.0 - 0.3 * nucleoli) + staining.dna_cytoplasm * cytoplasm

    rna = (
        staining.rna_nucleus * nucleus * (1.0 + 0.1 * textures["chromatin"])
        + per_pixel("nucleoli") * nucleoli * nucleus
        + per_pixel("rna") * cytoplasm * thickness(CYTOPLASM_THICKNESS["RNA"] * scale) * (1.0 + 0.2 * textures["fine"])
    )

    reticulum = np.exp(-((textures["reticulum"] / 0.55) ** 2))
    envelope = np.exp(-(((maps.nucleus_distance - 1.0) / 0.05) ** 2)) * inside
    er = (
        per_pixel("er")
        * cytoplasm
        * thickness(per_pixel("er_spread") + 1e-3)
        * (0.5 + 0.8 * reticulum)
        * (1.0 + 0.15 * textures["fine"])
        + staining.er_envelope * envelope
        + staining.er_nucleus * nucleus * (1.0 + 0.4 * nucleoli)
    )

    puncta = np.clip(textures["golgi"] + 0.6, 0.0, None)
    membrane = ndimage.gaussian_filter(_membrane(maps.label), max(1.2 * scale, 0.7))
    agp = (
        staining.agp_nucleus * nucleus * (1.0 + 0.1 * textures["chromatin"])
        + staining.agp_cytoplasm
        * cytoplasm
        * thickness(CYTOPLASM_THICKNESS["AGP"] * scale)
        * (1.0 + 0.2 * textures["fine"])
        + staining.agp_fibres * per_pixel("fibres") * maps.fibres * cytoplasm * (0.6 + 0.4 * np.abs(textures["fine"]))
        + staining.agp_membrane * membrane
        + staining.agp_golgi * maps.golgi * puncta * cytoplasm
    )

    punctate = per_pixel("punctate")
    tubules = np.exp(-((textures["tubules"] / 0.5) ** 2)) * np.clip(1.0 + 0.5 * textures["fine"], 0.0, None)
    dots = np.clip(textures["puncta"] - 1.0, 0.0, None) * 3.0
    network = (1.0 - punctate) * tubules + punctate * dots
    perinuclear = np.exp(-outside / (per_pixel("mito_spread") * (1.0 + 0.7 * maps.polarity) + 1e-3))
    mito = staining.mito_nucleus * nucleus + per_pixel("mito") * cytoplasm * perinuclear * (0.45 + 1.1 * network)
    stains = {
        "DNA": dna,
        "ER": er * brightness,
        "RNA": rna * brightness,
        "AGP": agp * brightness,
        "Mito": mito * brightness,
    }
    return np.stack([stains[name] for name in CHANNELS])


def _acquire(signal: np.ndarray, acquisition: Acquisition, rng: np.random.Generator, scale: float) -> np.ndarray:
    """The microscope: gains, out-of-focus haze, blur, vignetting, background, shot and read noise; uint16."""
    image = signal * np.asarray(acquisition.channel_gain, np.float32)[:, None, None]
    haze = ndimage.gaussian_filter(image[:, ::4, ::4], (0, 6.0 * scale, 6.0 * scale))
    image += acquisition.haze * np.repeat(np.repeat(haze, 4, axis=1), 4, axis=2)[:, : image.shape[1], : image.shape[2]]
    image = ndimage.gaussian_filter(image, (0, acquisition.psf_sigma * scale, acquisition.psf_sigma * scale))
    size = image.shape[-1]
    axis = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    cy, cx = acquisition.vignetting_centre
    radius2 = ((axis[:, None] - cy) ** 2 + (axis[None, :] - cx) ** 2) / 2.0
    image = (
        image * (1.0 - acquisition.vignetting * radius2) + np.asarray(acquisition.background, np.float32)[:, None, None]
    )
    # shot noise (Gaussian limit of Poisson: thousands of photons per pixel) and read noise; binning averages pixels
    variance = (
        np.clip(image, 0.0, None) * scale**2 / acquisition.photons_per_adu + (acquisition.read_noise * scale) ** 2
    )
    image = image + np.sqrt(variance) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def render_field(
    phenotype: Sequence[float] | np.ndarray,
    rng: np.random.Generator,
    size: int = 384,
    binning: float = 2.0,
    cell_type: str | CellType = "U2OS",
    staining: Staining = Staining(),
    acquisition: Acquisition = Acquisition(),
    penetrance_sd: float = 0.3,
) -> Field:
    """Render one 5-channel field of cells with the latent ``phenotype``.

    Parameters
    ----------
    phenotype
        Latent vector over :data:`cellstudy.simulation.phenotypes.AXES` (zeros: unperturbed).
    rng
        Source of all randomness (the same state gives the same field).
    size
        Field edge in pixels.
    binning
        Edge of one field pixel in CPJUMP1 native pixels (2: 2 × 2 binning, so a
        384-pixel field covers 768 native pixels, about half a CPJUMP1 field).
    cell_type
        A key of :data:`CELL_TYPES` or a :class:`CellType`.
    staining, acquisition
        Stain levels and technical state.
    penetrance_sd
        Cell-to-cell spread of the phenotype's strength (each cell shows
        ``phenotype × max(0, 1 + penetrance_sd × N(0, 1))``).

    Returns
    -------
    :class:`Field` with the image, the number of cells with a visible nucleus and the nuclei labels.
    """
    phenotype = np.asarray(phenotype, dtype=np.float32)
    if phenotype.shape != (N_AXES,):
        raise ValueError(
            f"phenotype must have {N_AXES} values (one per axis of cellstudy.simulation.phenotypes.AXES), "
            f"got shape {phenotype.shape}"
        )
    morphology = CELL_TYPES[cell_type] if isinstance(cell_type, str) else cell_type
    scale = 1.0 / binning
    margin = scale * max(morphology.cell_radii)
    count_effect = np.exp(AXIS_GAINS[_AXIS["cell_count"]] * phenotype[_AXIS["cell_count"]])
    expected = (
        morphology.density * 1e-6 * ((size + 2 * margin) / scale) ** 2 * acquisition.density_factor * count_effect
    )
    colonies = 1.0 / (
        1.0 + np.exp(-morphology.clumping * bandpass_noise(rng, (size, size), 250 * scale, 800 * scale) + 2.0)
    )
    nucleus_reach = (
        scale
        * morphology.nucleus_radii[0]
        * np.exp(AXIS_GAINS[_AXIS["nuclear_size"]] * phenotype[_AXIS["nuclear_size"]])
    )
    centres = place_cells(rng, rng.poisson(expected), (-margin, size + margin), 2.6 * nucleus_reach, colonies)
    cells = _cell_parameters(phenotype, rng, centres, morphology, staining, scale, penetrance_sd)
    maps = _paint_cells(cells, size, rng, scale)
    signal = _stain(maps, cells, _textures(rng, size, scale), staining, scale)
    image = _acquire(signal, acquisition, rng, scale)
    visible = np.unique(maps.nuclei)[1:]
    numbering = np.zeros(len(centres) + 1, np.int32)
    numbering[visible] = np.arange(1, len(visible) + 1)
    return Field(image, len(visible), numbering[maps.nuclei])


# --------------------------------------------------------------------------- technical variation


@dataclass(frozen=True)
class TechnicalConfig:
    """Technical and well-to-well variation of the simulated screen.

    Attributes
    ----------
    plate_intensity_sd
        Log-normal spread of each plate's per-channel gain.
    well_intensity_sd
        Log-normal spread of each well's per-channel gain.
    vignetting
        Mean relative intensity loss at the field corners.
    vignetting_sd
        Plate-to-plate spread of the vignetting strength.
    vignetting_offset
        Largest offset of a plate's optical axis from the field centre (field half-widths).
    edge_intensity
        Relative intensity change of the outer ring of wells (half of it on the second ring).
    edge_density
        Relative cell-density change of the outer ring of wells (half on the second ring).
    density
        Multiplier of every cell type's seeding density.
    well_density_sd
        Log-normal spread of cell density between wells.
    plate_latent_sd
        Per-axis standard deviation of a biological shift shared by a plate's wells.
    well_latent_sd
        Per-axis standard deviation of each well's own biological deviation
        (0.15: below the classical features' rendering and cell-sampling noise,
        so that the oracle profile shows how much signal those lose).
    penetrance_sd
        Cell-to-cell spread of the phenotype strength within a well.
    acquisition
        The microscope's settings (background, blur, haze, noise) that the
        plate and well effects modify.
    """

    plate_intensity_sd: float = 0.1
    well_intensity_sd: float = 0.04
    vignetting: float = 0.15
    vignetting_sd: float = 0.05
    vignetting_offset: float = 0.2
    edge_intensity: float = 0.08
    edge_density: float = -0.2
    density: float = 1.0
    well_density_sd: float = 0.15
    plate_latent_sd: float = 0.1
    well_latent_sd: float = 0.15
    penetrance_sd: float = 0.3
    acquisition: Acquisition = field(default_factory=Acquisition)


def edge_weight(row: int, col: int, n_rows: int = 16, n_cols: int = 24) -> float:
    """1 for the outer ring of a plate, 0.5 for the second ring, 0 inside (1-based row and column)."""
    ring = min(row - 1, n_rows - row, col - 1, n_cols - col)
    return {0: 1.0, 1: 0.5}.get(ring, 0.0)


def plate_state(
    plate: str, technical: TechnicalConfig, seed: int
) -> tuple[np.ndarray, float, tuple[float, float], np.ndarray]:
    """A plate's (channel gains, vignetting, vignetting centre, latent shift)."""
    rng = keyed_rng(seed, "plate", plate)
    gains = np.exp(technical.plate_intensity_sd * rng.standard_normal(len(CHANNELS)))
    vignetting = float(np.clip(technical.vignetting + technical.vignetting_sd * rng.standard_normal(), 0.0, 0.9))
    centre = tuple(rng.uniform(-technical.vignetting_offset, technical.vignetting_offset, 2))
    return gains, vignetting, centre, technical.plate_latent_sd * rng.standard_normal(N_AXES)


def well_state(
    plate: str, well: str, row: int, col: int, technical: TechnicalConfig, seed: int
) -> tuple[Acquisition, np.ndarray]:
    """A well's :class:`Acquisition` (plate and well effects) and its latent deviation (plate shift + well noise)."""
    plate_gains, vignetting, centre, plate_shift = plate_state(plate, technical, seed)
    rng = keyed_rng(seed, "well", plate, well)
    edge = edge_weight(row, col)
    gains = (
        plate_gains
        * np.exp(technical.well_intensity_sd * rng.standard_normal(len(CHANNELS)))
        * (1.0 + technical.edge_intensity * edge)
    )
    density = (
        technical.density
        * np.exp(technical.well_density_sd * rng.standard_normal())
        * (1.0 + technical.edge_density * edge)
    )
    acquisition = replace(
        technical.acquisition,
        channel_gain=tuple(map(float, gains * np.asarray(technical.acquisition.channel_gain))),
        vignetting=vignetting,
        vignetting_centre=centre,
        density_factor=float(density * technical.acquisition.density_factor),
    )
    return acquisition, plate_shift + technical.well_latent_sd * rng.standard_normal(N_AXES)


# --------------------------------------------------------------------------- design


TIMEPOINTS = ("short", "long")
"""Time-point choices: each modality's shorter or longer CPJUMP1 time point
(compound 24/48 h, CRISPR 96/144 h, ORF 48/96 h)."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: the design subset, image geometry, seed and all phenotype and noise knobs.

    Attributes
    ----------
    n_genes
        Number of genes to simulate when ``genes`` is not given (drawn with the
        seed among the CPJUMP1 genes that compounds target). The default, 50
        (1,260 wells), lets sister and compound-gene matching test dozens
        of genes while rendering the screen and its classical features fit
        the default run size's 6-minute budget on 2 CPU cores (measurements:
        book, Decisions and measurements).
    genes
        Explicit genes (CPJUMP1 gene symbols), overriding ``n_genes``.
    modalities
        Any of ``compound``, ``crispr``, ``orf``.
    cell_types
        Any of ``U2OS``, ``A549``.
    timepoints
        Any of :data:`TIMEPOINTS`.
    n_replicate_plates
        Replicate plates per modality, cell type and time point (the first of
        the real CPJUMP1 plates by barcode; CPJUMP1 has 4 compound, 4 CRISPR and
        2 ORF plates); ``None`` keeps all.
    negcon_wells_per_plate
        Negative-control wells kept per plate (the same real positions on every
        replicate); ``None`` keeps all (60-64).
    image_size
        Field edge in pixels (320 at the default binning: about 35 U2OS cells per field).
    binning
        Field pixel edge in native CPJUMP1 pixels (see :func:`render_field`).
    fields_per_well
        Fields of view per well.
    seed
        Seed of every random draw.
    n_workers
        Processes rendering wells (the output does not depend on it).
    phenotypes, technical, staining
        Phenotype strengths, technical variation and stain levels.
    metadata_folder
        CPJUMP1 metadata folder; default :func:`cellstudy.data.cpjump1.metadata_folder`.
    """

    n_genes: int = 50
    genes: tuple[str, ...] | None = None
    modalities: tuple[str, ...] = cpjump1.MODALITIES
    cell_types: tuple[str, ...] = ("U2OS",)
    timepoints: tuple[str, ...] = ("long",)
    n_replicate_plates: int | None = None
    negcon_wells_per_plate: int | None = 16
    image_size: int = 320
    binning: float = 2.0
    fields_per_well: int = 1
    seed: int = 0
    n_workers: int = 2
    phenotypes: PhenotypeConfig = field(default_factory=PhenotypeConfig)
    technical: TechnicalConfig = field(default_factory=TechnicalConfig)
    staining: Staining = field(default_factory=Staining)
    metadata_folder: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready nested dictionary of the configuration."""
        return json.loads(json.dumps(asdict(self)))


QUICK_CONFIG = SimulationConfig(n_genes=4, n_replicate_plates=2, negcon_wells_per_plate=4, image_size=160)
"""A small design for tests and smoke runs (about 60 wells of 160 × 160 pixels)."""


def select_genes(config: SimulationConfig) -> list[str]:
    """The simulated genes: ``config.genes`` (checked), else ``n_genes`` drawn among compound-targeted CPJUMP1 genes.

    Raises
    ------
    ValueError
        A requested gene is not perturbed in CPJUMP1, or ``n_genes`` exceeds the candidates.
    """
    known = cpjump1.genes(config.metadata_folder)
    if config.genes is not None:
        unknown = sorted(set(config.genes) - set(known))
        if unknown:
            raise ValueError(
                f"SimulationConfig.genes: {unknown} are not CPJUMP1 genes (see cellstudy.data.cpjump1.genes())"
            )
        return sorted(set(config.genes))
    targeted = sorted(set(cpjump1.gene_compound_pairs(config.metadata_folder)[GENE]))
    if not 0 < config.n_genes <= len(targeted):
        raise ValueError(
            f"SimulationConfig.n_genes = {config.n_genes}; expected 1 to {len(targeted)} compound-targeted genes"
        )
    chosen = keyed_rng(config.seed, "genes").choice(targeted, config.n_genes, replace=False)
    return sorted(map(str, chosen))


def _check_choices(config: SimulationConfig) -> None:
    """Raise ValueError naming the first option of ``config`` with an unknown value."""
    for name, allowed in (
        ("modalities", cpjump1.MODALITIES),
        ("cell_types", tuple(CELL_TYPES)),
        ("timepoints", TIMEPOINTS),
    ):
        unknown = sorted(set(getattr(config, name)) - set(allowed))
        if unknown or not getattr(config, name):
            raise ValueError(
                f"SimulationConfig.{name} = {getattr(config, name)!r}; expected a non-empty subset of {allowed}"
            )


def timepoint_labels(wells: pd.DataFrame, folder: str | os.PathLike | None = None) -> pd.Series:
    """``short`` or ``long`` per well: whether its time point is its modality's shorter one in CPJUMP1."""
    conditions = cpjump1.plate_conditions(folder)
    shortest = conditions.groupby(MODALITY)[TIMEPOINT].min()
    is_short = wells[TIMEPOINT].astype(int) == wells[MODALITY].map(shortest)
    return pd.Series(np.where(is_short, "short", "long"), index=wells.index)


def _is_simulated(wells: pd.DataFrame, genes: Sequence[str]) -> pd.Series:
    """Wells holding a negative control or a perturbation of (or compound targeting) a simulated gene."""
    targets = wells[TARGET_LIST].fillna("").str.split(cpjump1.TARGET_SEPARATOR)
    hits_gene = targets.map(lambda listed: bool(set(listed) & set(genes)))
    return wells[NEGCON] | hits_gene


def _negcon_subset(wells: pd.DataFrame, config: SimulationConfig) -> pd.Series:
    """False for negative-control wells beyond ``negcon_wells_per_plate``.

    The kept positions are the same on every plate of a modality.
    """
    if config.negcon_wells_per_plate is None:
        return pd.Series(True, index=wells.index)
    keep = pd.Series(~wells[NEGCON], index=wells.index)
    for modality, group in wells[wells[NEGCON]].groupby(MODALITY):
        positions = sorted(group[WELL].unique())
        count = min(config.negcon_wells_per_plate, len(positions))
        chosen = set(keyed_rng(config.seed, "negcon", modality).choice(positions, count, replace=False))
        keep[group.index] = group[WELL].isin(chosen)
    return keep


def design(config: SimulationConfig) -> pd.DataFrame:
    """The simulated wells: rows of :func:`cellstudy.data.cpjump1.well_table` for the chosen subset.

    Keeps the requested modalities, cell types and time points, the first
    ``n_replicate_plates`` plates of each group, and the wells of the simulated
    genes' perturbations (CRISPR guides, ORFs, compounds whose annotated targets
    include one) plus ``negcon_wells_per_plate`` negative controls. Plates are
    renamed ``SIM_<barcode>``; ``Metadata_source_plate`` keeps the real barcode.
    """
    _check_choices(config)
    genes = select_genes(config)
    wells = cpjump1.well_table(config.metadata_folder)
    wells = wells[wells[PERT_TYPE] != cpjump1.EMPTY_WELL]
    wells = wells[
        wells[MODALITY].isin(config.modalities)
        & wells[CELL_TYPE].isin(config.cell_types)
        & timepoint_labels(wells, config.metadata_folder).isin(config.timepoints)
    ]
    groups = [MODALITY, CELL_TYPE, TIMEPOINT]
    plate_rank = wells.groupby(groups)[PLATE].rank(method="dense")
    if config.n_replicate_plates is not None:
        wells = wells[plate_rank <= config.n_replicate_plates]
    wells = wells[_is_simulated(wells, genes)]
    wells = wells[_negcon_subset(wells, config)]
    wells = wells.assign(**{SOURCE_PLATE: wells[PLATE], PLATE: "SIM_" + wells[PLATE]})
    return wells.reset_index(drop=True)


# --------------------------------------------------------------------------- simulation


class _WellTask(NamedTuple):
    """Everything a worker needs to render and write one well."""

    folder: Path
    plate: str
    well: str
    cell_type: str
    phenotype: np.ndarray
    acquisition: Acquisition
    config: SimulationConfig


def _render_well(task: _WellTask) -> int:
    """Render and write every field of one well into ``folder/plate``; returns its number of cells."""
    n_cells = 0
    for field_number in range(1, task.config.fields_per_well + 1):
        rendered = render_field(
            task.phenotype,
            keyed_rng(task.config.seed, "field", task.plate, task.well, field_number),
            size=task.config.image_size,
            binning=task.config.binning,
            cell_type=task.cell_type,
            staining=task.config.staining,
            acquisition=task.acquisition,
            penetrance_sd=task.config.technical.penetrance_sd,
        )
        write_field(task.folder / task.plate, task.well, field_number, rendered.image, CPJUMP1_CHANNELS)
        n_cells += rendered.n_cells
    return n_cells


def _run(tasks: list[_WellTask], n_workers: int, progress: bool) -> list[int]:
    """Render ``tasks`` with ``n_workers`` processes (in this process if 1); cell counts in task order."""
    return map_with_progress(_render_well, tasks, n_workers, "rendering wells", "well", progress)


IMAGE_FOLDER = "images"
"""Sub-folder of the output holding ``<plate>/<Phenix-named TIFFs>``."""
RENDERED_PREFIX = "Rendered_"
"""Column prefix of the per-well rendered latent phenotype in ``oracle.csv``."""
TABLE_FILES = {
    "wells": "wells.csv",
    "ground_truth": "ground_truth.csv",
    "pairs": "compound_gene_pairs.csv",
    "oracle": "oracle.csv",
}
"""File name of each table of :class:`SimulationResult` in the output folder."""
SUMMARY_FILE = "ground_truth.json"
"""Configuration, genes, axes and counts; written last."""


@dataclass(frozen=True)
class SimulationResult:
    """Tables of a simulated screen (all also written to ``out_dir``, see :data:`TABLE_FILES`).

    Attributes
    ----------
    out_dir
        Output folder.
    wells
        The design's well table plus ``Metadata_n_cells`` (cells with a visible nucleus, all fields).
    ground_truth
        Latent phenotype (full strength) of every perturbation per cell type,
        guide efficiencies, simulated targets and polypharmacology drivers
        (:func:`cellstudy.simulation.phenotypes.perturbation_phenotypes`).
    pairs
        Annotated vs truly shared compound–gene pairs (:func:`cellstudy.simulation.phenotypes.compound_gene_truth`).
    oracle
        Per well: ``Metadata_*``, the noise-free latent phenotype at the well's
        time point (``Latent_*``) and the one rendered, with plate and well noise
        (``Rendered_*``).
    """

    out_dir: Path
    wells: pd.DataFrame
    ground_truth: pd.DataFrame
    pairs: pd.DataFrame
    oracle: pd.DataFrame

    @property
    def image_folder(self) -> Path:
        """Folder with one sub-folder of Phenix-named TIFFs per plate."""
        return self.out_dir / IMAGE_FOLDER

    def field_table(self) -> pd.DataFrame:
        """One row per rendered field: ``folder``, ``well``, ``field`` and the well's ``Metadata_*`` columns.

        The input :func:`cellstudy.features.classical.profile_fields` and the embedding stage read fields from.
        """
        n_fields = int(json.loads((self.out_dir / SUMMARY_FILE).read_text())["config"]["fields_per_well"])
        wells = self.wells.filter(like=METADATA_PREFIX)
        table = wells.assign(folder=[str(self.image_folder / plate) for plate in wells[PLATE]], well=wells[WELL])
        return (
            table.loc[table.index.repeat(n_fields)]
            .assign(field=np.tile(np.arange(1, n_fields + 1), len(table)))
            .reset_index(drop=True)
        )

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> SimulationResult:
        """Read a simulation written by :func:`simulate` (its summary file is written last, so it marks completion)."""
        out_dir = Path(out_dir)
        if not (out_dir / SUMMARY_FILE).exists():
            raise FileNotFoundError(f"{out_dir / SUMMARY_FILE} is missing: no complete simulation in {out_dir}")
        tables = {attribute: pd.read_csv(out_dir / name) for attribute, name in TABLE_FILES.items()}
        return cls(out_dir=out_dir, **tables)


def bin_native(image: np.ndarray, binning: float) -> np.ndarray:
    """A native-resolution (C, H, W) field averaged over ``binning`` × ``binning`` blocks (integer binning),
    so that a real field can be shown at the simulated pixel size.
    """
    factor = int(round(binning))
    if factor != binning or factor < 1:
        raise ValueError(f"binning {binning} is not a positive whole number")
    channels, height, width = image.shape
    height, width = height - height % factor, width - width % factor
    blocks = image[:, :height, :width].reshape(channels, height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(2, 4)).astype(image.dtype)


def perturbation_table(wells: pd.DataFrame) -> pd.DataFrame:
    """One row per ``Metadata_broad_sample`` of a well table, with its modality, gene, targets and control type."""
    columns = [
        SAMPLE,
        MODALITY,
        NAME,
        GENE,
        TARGET_LIST,
        CONTROL_TYPE,
        NEGCON,
    ]
    return wells[columns].drop_duplicates(SAMPLE).reset_index(drop=True)


def well_states(wells: pd.DataFrame, technical: TechnicalConfig, seed: int) -> tuple[list[Acquisition], np.ndarray]:
    """Every well's :class:`Acquisition` and latent deviation (n_wells × axes), see :func:`well_state`."""
    columns = [PLATE, WELL, ROW, COL]
    states = [
        well_state(plate, well, row, col, technical, seed)
        for plate, well, row, col in wells[columns].itertuples(index=False)
    ]
    return [acquisition for acquisition, _ in states], np.array([deviation for _, deviation in states]).reshape(
        len(wells), N_AXES
    )


def well_phenotypes(
    wells: pd.DataFrame, ground_truth: pd.DataFrame, deviations: np.ndarray, config: SimulationConfig
) -> pd.DataFrame:
    """The oracle: per well, the noise-free latent phenotype (``Latent_*``) and the rendered one (``Rendered_*``).

    The noise-free phenotype is the perturbation's in the well's cell type
    (from ``ground_truth``), times ``early_timepoint_strength`` at the shorter
    time point; the rendered one adds the well's latent ``deviations`` (:func:`well_states`).
    """
    latent = ground_truth.set_index([SAMPLE, CELL_TYPE])[latent_columns()]
    keys = pd.MultiIndex.from_arrays([wells[SAMPLE], wells[CELL_TYPE]])
    is_short = timepoint_labels(wells, config.metadata_folder) == "short"
    strength = np.where(is_short, config.phenotypes.early_timepoint_strength, 1.0)
    clean = latent.reindex(keys).to_numpy() * strength[:, None]
    return pd.concat(
        [
            wells.filter(like=METADATA_PREFIX).reset_index(drop=True),
            pd.DataFrame(clean, columns=latent_columns()),
            pd.DataFrame(clean + deviations, columns=[RENDERED_PREFIX + name for name in AXIS_NAMES]),
        ],
        axis=1,
    )


def simulate(config: SimulationConfig, out_dir: str | os.PathLike, progress: bool = True) -> SimulationResult:
    """Render the simulated screen into ``out_dir`` and write its tables and ground truth.

    ``out_dir`` receives ``images/<plate>/`` (Phenix-named TIFFs in the CPJUMP1
    channel layout, readable with :func:`cellstudy.data.images.read_field`), the
    tables of :data:`TABLE_FILES` and, last, :data:`SUMMARY_FILE`
    (configuration, genes, axes, counts). Wells are rendered by
    ``config.n_workers`` processes with a progress bar; the output does not
    depend on their number.
    """
    out_dir = Path(out_dir)
    image_folder = out_dir / IMAGE_FOLDER
    image_folder.mkdir(parents=True, exist_ok=True)
    genes = select_genes(config)
    wells = design(config)
    perturbations = perturbation_table(wells)
    all_genes = cpjump1.genes(config.metadata_folder)
    truth_arguments = (perturbations, genes, config.cell_types, config.phenotypes, config.seed, all_genes)
    ground_truth = perturbation_phenotypes(*truth_arguments)
    pairs = compound_gene_truth(*truth_arguments)
    acquisitions, deviations = well_states(wells, config.technical, config.seed)
    oracle = well_phenotypes(wells, ground_truth, deviations, config)
    rendered = oracle[[RENDERED_PREFIX + name for name in AXIS_NAMES]].to_numpy(np.float32)
    tasks = [
        _WellTask(image_folder, plate, well, cell_type, phenotype, acquisition, config)
        for (plate, well, cell_type), phenotype, acquisition in zip(
            wells[[PLATE, WELL, CELL_TYPE]].itertuples(index=False),
            rendered,
            acquisitions,
        )
    ]
    wells = wells.assign(Metadata_n_cells=_run(tasks, config.n_workers, progress))
    result = SimulationResult(out_dir, wells, ground_truth, pairs, oracle)
    for attribute, name in TABLE_FILES.items():
        with atomic_path(out_dir / name) as tmp:
            getattr(result, attribute).to_csv(tmp, index=False)
    summary = {
        "config": config.to_dict(),
        "genes": genes,
        "axes": [asdict(axis) for axis in AXES],
        "counts": {
            "wells": len(wells),
            "plates": int(wells[PLATE].nunique()),
            "perturbations": len(perturbations),
        },
    }
    with atomic_path(out_dir / SUMMARY_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return result
