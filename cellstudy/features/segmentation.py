"""Classical nucleus and cell segmentation of Cell Painting fields (scikit-image, no models).

Nuclei are found in the DNA channel: Gaussian smoothing, an Otsu threshold on
the log intensity (nucleus brightness varies several-fold across a field and
between treatments; in log space the threshold falls between the faint
cytoplasmic Hoechst signal and the dimmest nuclei) bounded below by a multiple
of the background, hole filling, removal of
small objects, and a distance-transform watershed that splits touching nuclei.
Cells grow from the nuclei by a marker watershed on the inverted sum of the
cytoplasmic stains (as CellProfiler's "Watershed - Image" secondary objects):
neighbouring cells meet in the dim valleys between them, inside a log-Otsu
mask of that sum.

Default sizes are for CPJUMP1 (20x water objective, 1080 x 1080 fields, U2OS
nuclei about 25-50 px across, median area about 1,200 px, smaller after
FK-866, larger and irregular after AMG900). For another magnification scale
every length parameter with the magnification and every area parameter with
its square.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

from cellstudy.data.images import CHANNELS


def smooth(channel: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed float32 copy of ``channel`` in its original intensity units."""
    return filters.gaussian(np.asarray(channel, dtype=np.float32), sigma=sigma, preserve_range=True)


def log_otsu(intensity: np.ndarray, floor_fraction: float = 0.01) -> float:
    """Otsu threshold of ``log(intensity + floor)``, returned in intensity units.

    ``floor`` is ``floor_fraction`` times the 99th percentile: negligible next to
    a camera's dark offset, but it keeps exact zeros (as in rendered images)
    from dominating the log histogram.
    """
    floor = floor_fraction * max(float(np.percentile(intensity, 99)), np.finfo(np.float32).tiny)
    return float(np.exp(filters.threshold_otsu(np.log(np.maximum(intensity, 0) + floor))) - floor)


def remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop objects of ``labels`` with fewer than ``min_area`` pixels and renumber the rest 1..n."""
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return segmentation.relabel_sequential(np.where(small[labels], 0, labels))[0]


def nucleus_threshold(intensity: np.ndarray, min_contrast: float) -> float:
    """Log-Otsu threshold of ``intensity``, but at least ``min_contrast`` times its 1st percentile (the background)."""
    return max(log_otsu(intensity), min_contrast * float(np.percentile(intensity, 1)))


def foreground_mask(intensity: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """Pixels of ``intensity`` above ``threshold``, holes filled, objects under ``min_area`` removed."""
    mask = ndi.binary_fill_holes(intensity > threshold)
    return remove_small(ndi.label(mask)[0], min_area) > 0


def split_touching(mask: np.ndarray, split_depth: float, distance_sigma: float) -> np.ndarray:
    """Label ``mask``, splitting touching blobs by a watershed of the distance transform.

    Seeds are the h-maxima of the (smoothed) distance to the background: a blob
    is split only where its neck is at least ``split_depth`` px narrower (in
    half-width) than the blob on both sides, so elongated or lumpy single nuclei
    stay whole. A blob too thin to have such a maximum is its own seed.
    """
    components = ndi.label(mask)[0]
    distance = filters.gaussian(ndi.distance_transform_edt(mask), sigma=distance_sigma, preserve_range=True)
    seeds = ndi.label(morphology.h_maxima(distance, split_depth) & mask)[0]
    unseeded = mask & ~np.isin(components, components[seeds > 0])
    seeds[unseeded] = components[unseeded] + seeds.max()
    return segmentation.watershed(-distance, seeds, mask=mask)


def segment_nuclei(
    dna: np.ndarray,
    sigma: float = 2.0,
    min_contrast: float = 2.0,
    min_area: int = 80,
    split_depth: float = 1.0,
    distance_sigma: float = 2.0,
) -> np.ndarray:
    """Label the nuclei of a DNA (Hoechst) image.

    Parameters
    ----------
    dna
        2-D DNA channel, any numeric type.
    sigma
        Gaussian smoothing (px) before thresholding; about a twentieth of a
        nucleus diameter removes pixel noise and chromatin texture without
        merging neighbours.
    min_contrast
        Lower bound on the threshold as a multiple of the background (1st
        percentile), so that a field without nuclei yields none instead of
        Otsu splitting its noise. CPJUMP1 thresholds are 6-8x the background.
    min_area
        Objects smaller than this (px) are dropped as debris; well under a tenth
        of a typical nucleus area (CPJUMP1: ~1,200 px) keeps debris and
        micronuclei out and small apoptotic nuclei in.
    split_depth
        How much narrower (px, in half-width, measured on the smoothed distance
        transform) the neck between two touching nuclei must be than the nuclei
        themselves for them to be split. Larger values split less. Blur and
        smoothing fill necks in, so this is well below the geometric depth; 1 px
        splits touching CPJUMP1 nuclei and leaves elongated AMG900 nuclei whole
        (measurements: book, Decisions and measurements).
    distance_sigma
        Smoothing (px) of the distance transform before seeds are picked, which
        stops ragged outlines from over-splitting one nucleus (measurements:
        book, Decisions and measurements).

    Returns
    -------
    Integer label image of the same shape, 0 background, nuclei 1..n.
    """
    intensity = smooth(dna, sigma)
    mask = foreground_mask(intensity, nucleus_threshold(intensity, min_contrast), min_area)
    return remove_small(split_touching(mask, split_depth, distance_sigma), min_area)


def count_nuclei(dna: np.ndarray, **parameters) -> int:
    """Number of nuclei that :func:`segment_nuclei` finds (``parameters`` are passed on)."""
    return int(segment_nuclei(dna, **parameters).max())


def cytoplasm_signal(image: np.ndarray, stains: Sequence[str], sigma: float, percentile: float) -> np.ndarray:
    """Smoothed sum of ``stains`` of a (5, H, W) image, each divided by its ``percentile`` percentile."""
    planes = [image[CHANNELS.index(name)].astype(np.float32) for name in stains]
    return smooth(sum(plane / max(np.percentile(plane, percentile), 1.0) for plane in planes), sigma)


def segment_cells(
    image: np.ndarray,
    nuclei: np.ndarray,
    stains: Sequence[str] = ("AGP", "RNA", "ER"),
    sigma: float = 3.0,
    percentile: float = 99.0,
    compactness: float = 0.0,
) -> np.ndarray:
    """Grow each nucleus into its cell.

    Parameters
    ----------
    image
        (5, H, W) field in :data:`cellstudy.data.images.CHANNELS` order.
    nuclei
        Nucleus labels from :func:`segment_nuclei`.
    stains
        Cytoplasmic stains whose sum gives the cell mask; touching cells are
        separated along the dim valleys of the sum.
    sigma
        Gaussian smoothing (px) of the sum; larger gives smoother outlines.
    percentile
        Each stain is divided by this percentile of itself before summing, so the
        stains weigh about equally whatever their brightness.
    compactness
        ``skimage.segmentation.watershed`` compactness: 0 follows the stain
        intensity only; larger values (e.g. 0.01) give rounder, more Voronoi-like
        cells where boundaries are faint.

    Returns
    -------
    Label image where each cell carries the label of its nucleus and contains it
    entirely; foreground not connected to any nucleus stays 0.
    """
    signal = cytoplasm_signal(image, stains, sigma, percentile)
    mask = (signal > log_otsu(signal)) | (nuclei > 0)
    return segmentation.watershed(-signal, markers=nuclei, mask=mask, compactness=compactness)


def nuclei_counts(stack: Mapping[tuple[str, str], np.ndarray]) -> tuple[pd.DataFrame, dict]:
    """Nuclei (:func:`segment_nuclei` of the DNA channel) of each field keyed by compound and well: their number
    and median area, most nuclei first; and the label images.
    """
    counts, labels = [], {}
    for (compound, well), image in stack.items():
        labels[(compound, well)] = segment_nuclei(image[CHANNELS.index("DNA")])
        areas = np.bincount(labels[(compound, well)].ravel())[1:]
        counts.append(
            {
                "compound": compound,
                "well": well,
                "nuclei": int(labels[(compound, well)].max()),
                "median_nuclear_area_px": float(np.median(areas)) if len(areas) else np.nan,
            }
        )
    return pd.DataFrame(counts).sort_values("nuclei", ascending=False, ignore_index=True), labels
