"""Figures of the study, and saving each one with its source data beside it.

Following the CPJUMP1 paper repository, a figure is named after the notebook that makes it
(``01_data_exploration_plate_layouts.png``) and its source data is saved as a CSV of the same name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import umap
from matplotlib.colors import ListedColormap

from cellstudy.columns import COL, GENE, MODALITY, NEGCON, ROW, SAMPLE, TARGET_LIST
from cellstudy.data.images import CHANNELS, composite_rgb, rescale_percentile
from cellstudy.files import atomic_path
from cellstudy.profiling.profiles import cosine_similarity_matrix, feature_columns, standardise

PLATE_ROWS, PLATE_COLS = 16, 24


def save_figure(fig: plt.Figure, name: str, data: pd.DataFrame | None, figures_dir: str | Path) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` and its source ``data`` as ``<name>.csv``.

    ``name`` should start with the notebook's name, e.g. ``01_data_exploration_intensities``.
    """
    png = Path(figures_dir) / f"{name}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    if data is not None:
        with atomic_path(png.with_suffix(".csv")) as tmp:
            data.to_csv(tmp, index=False)
    return png


def plate_grid(wells: pd.DataFrame, value: str) -> pd.DataFrame:
    """A 16 × 24 grid (rows A–P, columns 1–24) of ``wells[value]`` from ``Metadata_row``/``Metadata_col``."""
    grid = wells.pivot_table(index=ROW, columns=COL, values=value, aggfunc="first")
    grid = grid.reindex(index=range(1, PLATE_ROWS + 1), columns=range(1, PLATE_COLS + 1))
    grid.index = [chr(ord("A") + r - 1) for r in grid.index]
    return grid


def plot_plate_layout(ax: plt.Axes, wells: pd.DataFrame, category: str, title: str, palette: dict[str, str]) -> None:
    """Draw one 384-well plate map, each well coloured by its ``category`` (e.g. control type)."""
    levels = list(palette)
    codes = wells[category].map({level: i for i, level in enumerate(levels)})
    grid = plate_grid(wells.assign(_code=codes), "_code")
    ax.imshow(
        grid.to_numpy(dtype=float),
        cmap=ListedColormap([palette[level] for level in levels]),
        vmin=-0.5,
        vmax=len(levels) - 0.5,
        interpolation="nearest",
    )
    ax.set_xticks(range(0, PLATE_COLS, 4), [str(c) for c in range(1, PLATE_COLS + 1, 4)], fontsize=7)
    ax.set_yticks(range(0, PLATE_ROWS, 3), grid.index[::3], fontsize=7)
    ax.set_title(title, fontsize=9)


def plot_channels(image: np.ndarray, title: str = "", axes_size: float = 2.6) -> plt.Figure:
    """One field: each of the five channels in grey (named) and the colour composite."""
    fig, axes = plt.subplots(1, len(CHANNELS) + 1, figsize=(axes_size * (len(CHANNELS) + 1), axes_size))
    for ax, name, channel in zip(axes, CHANNELS, image):
        ax.imshow(rescale_percentile(channel), cmap="gray")
        ax.set_title(name, fontsize=10)
    axes[-1].imshow(composite_rgb(image))
    axes[-1].set_title("composite", fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def knn_accuracy(knn: pd.DataFrame) -> plt.Figure:
    """Bars of the kNN check's accuracy per modality and feature set (:func:`cellstudy.evaluation.probe.comparison_table`),
    with chance as a dotted line.
    """
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.barplot(data=knn, x=MODALITY, y="accuracy", hue="features", ax=ax)
    for i, chance in enumerate(knn.drop_duplicates(MODALITY)["chance"]):
        ax.hlines(chance, i - 0.4, i + 0.4, color="black", ls=":", lw=1.5, label="chance" if i == 0 else None)
    ax.set(xlabel="", ylabel="1-NN accuracy (held-out plates)", title="Perturbation identity from well embeddings")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {
    "supported": "tab:green",
    "not supported": "tab:red",
    "inconclusive": "tab:orange",
    "not testable here": "lightgrey",
}
"""Colour of each verdict of :mod:`cellstudy.applications.claims`."""


def verdict_bars(counts: pd.DataFrame, data_label: str) -> plt.Figure:
    """Stacked bars of the tests per claim and verdict (:func:`cellstudy.applications.claim_tests.verdict_counts`)."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(counts) + 1.2))
    counts.plot.barh(stacked=True, ax=ax, color=[VERDICT_COLOURS[v] for v in counts.columns], width=0.7)
    ax.invert_yaxis()
    ax.set(xlabel=f"tests ({data_label})", ylabel="")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


METHOD_PANELS = [
    ("fraction_retrieved", "fraction_low", "fraction_high", "fraction retrieved"),
    ("mAP", "mAP_low", "mAP_high", "mean average precision"),
]
"""The two panels of :func:`method_bars`: metric, interval columns, axis label."""


def method_bars(
    summary: pd.DataFrame,
    methods: Sequence[str],
    labels: Mapping[str, str],
    data_label: str,
    xlim: float | None = 1.1,
) -> plt.Figure:
    """Fraction retrieved and mAP per task and modality (``row``), one bar per method with its interval, each
    labelled with the units it rests on and the distinct perturbation sets behind them (``n/sets``).
    ``xlim``: the right end of both axes (``None``: fitted to the bars).
    """
    rows = sorted(summary["row"].unique())
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(16, 1.1 * len(rows) + 2), sharey=True)
    for ax, (metric, low, high, label) in zip(axes, METHOD_PANELS, strict=True):
        for i, method in enumerate(methods):
            part = summary[summary["method"] == method].set_index("row").reindex(rows)
            y = np.arange(len(rows)) + (i - len(methods) / 2 + 0.5) * width
            bars = ax.barh(
                y,
                part[metric],
                height=width,
                label=labels[method],
                xerr=[part[metric] - part[low], part[high] - part[metric]],
                error_kw={"lw": 0.8},
            )
            counts = [
                "" if pd.isna(n) else f"{n:.0f}/{sets:.0f}" for n, sets in part[["n", "n_sets"]].to_numpy(dtype=float)
            ]
            ax.bar_label(bars, labels=counts, fontsize=6, padding=2)
        ax.set_yticks(np.arange(len(rows)), rows)
        ax.set(xlabel=f"{label} ({data_label} data; bars: units/perturbation sets)")
        ax.set_xlim(0, xlim)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


PAIRED_COLOURS = {
    "a better": "tab:green",
    "b better": "tab:red",
    "no significant difference": "grey",
    "too few independent units": "lightgrey",
}


def paired_differences(paired: pd.DataFrame, data_label: str, significance: float) -> plt.Figure:
    """Each paired comparison's mean mAP difference with its interval, coloured by verdict."""
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(paired) + 1.5))
    labels = paired["comparison"] + "  |  " + paired["row"] + " (" + paired["n"].astype(str) + " sets)"
    y = np.arange(len(paired))
    ax.errorbar(
        paired["mean_difference"],
        y,
        xerr=[paired["mean_difference"] - paired["ci_low"], paired["ci_high"] - paired["mean_difference"]],
        fmt="none",
        ecolor="grey",
        lw=1,
    )
    for verdict, colour in PAIRED_COLOURS.items():
        chosen = (paired["verdict"] == verdict).to_numpy()
        ax.scatter(paired.loc[chosen, "mean_difference"], y[chosen], color=colour, zorder=3, label=verdict)
    ax.legend(fontsize=8, title=f"BH-corrected p < {significance:g}", title_fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"difference in mAP, a − b (paired bootstrap 95% CI; {data_label} data)")
    return fig


CONTROL_MARKERS = {"duplicated control": "x", "added control": "+"}
"""Markers of the table changes in :func:`stability_strips`."""


def stability_strips(per_seed: pd.DataFrame, shift: pd.DataFrame, data_label: str) -> plt.Figure:
    """Fraction retrieved of each group (``row``) over null seeds (dots), per profiling method (``method``), with
    replicate retrieval's value after one more control well (crosses) beside them.
    """
    methods = list(dict.fromkeys(per_seed["method"]))
    rows = sorted(per_seed["row"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 0.45 * len(rows) + 1.8), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, method in zip(axes, methods, strict=True):
        seeds = per_seed[per_seed["method"] == method]
        ax.scatter(seeds["fraction_retrieved"], seeds["row"].map(rows.index), s=12, alpha=0.5, label="null seeds")
        changed = shift[shift["method"] == method]
        for change, marker in CONTROL_MARKERS.items():
            part = changed[changed["table"] == change]
            ax.scatter(part["fraction_retrieved"], part["row"].map(rows.index) + 0.25, marker=marker, label=change)
        ax.set_yticks(np.arange(len(rows)), rows, fontsize=8)
        ax.set(title=method, xlabel=f"fraction retrieved, study test ({data_label} data)", xlim=(-0.02, 1.02))
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def crispr_orf_boxes(
    pairs: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str], data_label: str
) -> plt.Figure:
    """Cosine of matched and unmatched CRISPR–ORF gene profiles per method."""
    fig, ax = plt.subplots(figsize=(10, 4))
    sns.boxplot(
        data=pairs.assign(method=pairs["method"].map(labels)),
        x="method",
        y="cosine",
        hue="pair",
        ax=ax,
        order=[labels[m] for m in methods],
        fliersize=1,
    )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="", ylabel=f"cosine, CRISPR vs ORF gene profile ({data_label})")
    return fig


def umap_points(consensus: pd.DataFrame, method: str) -> pd.DataFrame:
    """UMAP of a method's consensus profiles (negative controls left out), with each perturbation's modality and
    target: its gene, or for a compound the first annotated target the screen perturbs (else the first listed).
    """
    consensus = consensus[~consensus[NEGCON].astype(bool)].reset_index(drop=True)
    genes = set(consensus[GENE].dropna())
    listed = consensus[TARGET_LIST].fillna("").str.split("|")
    target = consensus[GENE].fillna(listed.map(lambda t: next((g for g in t if g in genes), t[0] or "none")))
    embedding = umap.UMAP(random_state=0, n_neighbors=min(15, len(consensus) - 1)).fit_transform(
        consensus[feature_columns(consensus)].to_numpy()
    )
    return pd.DataFrame(
        {
            "method": method,
            "UMAP1": embedding[:, 0],
            "UMAP2": embedding[:, 1],
            "modality": consensus[MODALITY],
            "target": target,
            "perturbation": consensus[SAMPLE],
        }
    )


def umap_grid(
    umap_table: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str], data_label: str, top: int = 12
) -> plt.Figure:
    """One row per method: the UMAP coloured by modality, and by target (the ``top`` commonest; ``target shown``)."""
    top_targets = umap_table["target"].value_counts().head(top).index
    fig, axes = plt.subplots(len(methods), 2, figsize=(13, 5.2 * len(methods)))
    for row, method in zip(axes, methods, strict=True):
        part = umap_table[umap_table["method"] == method]
        sns.scatterplot(data=part, x="UMAP1", y="UMAP2", hue="modality", ax=row[0], s=25)
        sns.scatterplot(
            data=part,
            x="UMAP1",
            y="UMAP2",
            hue="target shown",
            style="modality",
            ax=row[1],
            s=30,
            palette="tab20",
            hue_order=[*top_targets, "other"],
        )
        for ax in row:
            ax.set(title=f"{labels[method]} ({data_label})", xticks=[], yticks=[])
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def ablation_bars(
    ablation: pd.DataFrame, methods: Sequence[str], variants: Sequence[str], task_order: Sequence[str], data_label: str
) -> plt.Figure:
    """Mean mAP per task under each post-processing variant, one panel per method (``method`` holds its label)."""
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4.2), sharey=True)
    for ax, method in zip(axes, methods, strict=True):
        part = ablation[ablation["method"] == method]
        sns.barplot(
            data=part,
            x="task",
            y="mean_average_precision",
            hue="post_processing",
            ax=ax,
            order=task_order,
            hue_order=list(variants),
        )
        chosen = part.loc[part["in_main_table"], "post_processing"]
        ax.set(
            title=f"{method} (main table: {chosen.iloc[0] if len(chosen) else 'other'})",
            xlabel="",
            ylabel=f"mean mAP ({data_label})",
        )
        ax.set_xticks(range(len(task_order)), [t.replace("_", " ") for t in task_order], fontsize=8)
        ax.legend(fontsize=7, title="post-processing", title_fontsize=7)
    fig.tight_layout()
    return fig


def target_rank_boxes(
    ranks: pd.DataFrame,
    panels: Sequence[tuple[str, str]],
    modalities: Sequence[str],
    method_order: Sequence[str],
    labels: Mapping[str, str],
) -> plt.Figure:
    """Target ranks per method, one panel per (rank column, what it is) and genetic modality, with chance."""
    fig, axes = plt.subplots(
        len(panels), len(modalities), figsize=(6 * len(modalities), 3.8 * len(panels)), squeeze=False
    )
    for row, (column, what) in zip(axes, panels, strict=True):
        for ax, modality in zip(row, modalities, strict=True):
            part = ranks[ranks["Metadata_genetic_modality"] == modality].dropna(subset=[column])
            order = [labels[m] for m in method_order if m in set(part["method"])]
            part = part.assign(method=part["method"].map(labels))
            sns.boxplot(data=part, x="method", y=column, order=order, ax=ax, color="lightgrey", fliersize=0)
            sns.stripplot(
                data=part,
                x="method",
                y=column,
                order=order,
                ax=ax,
                size=3,
                alpha=0.6,
                hue="driven_by_unannotated_gene",
                palette={False: "tab:blue", True: "tab:red"},
            )
            ax.axhline(part["chance_rank"].median(), color="black", ls=":", lw=1, label="chance (median)")
            ax.set(title=f"{modality.upper()} genes, {what}", xlabel="", ylabel="rank (1 = most similar)")
            ax.invert_yaxis()
            ax.legend(title="driven by an unannotated gene", fontsize=7, title_fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def label_efficiency_curves(
    summary: pd.DataFrame,
    results: pd.DataFrame,
    encoders: Sequence[str],
    regimes: Sequence[str],
    fractions: Sequence[float],
    labels: Mapping[str, str],
    data_label: str,
) -> plt.Figure:
    """Accuracy against the share of labelled wells, pre-trained and random init, per encoder and regime."""
    fig, axes = plt.subplots(
        len(encoders), len(regimes), figsize=(5.5 * len(regimes), 7.5), sharex=True, sharey=True, squeeze=False
    )
    for row, method in zip(axes, encoders, strict=True):
        for ax, regime in zip(row, regimes, strict=True):
            part = summary[(summary["encoder"] == method) & (summary["regime"] == regime)]
            for encoder_state, curve in part.groupby("method", sort=False):
                ax.errorbar(
                    curve["label_fraction"],
                    curve["accuracy_mean"],
                    yerr=curve["accuracy_sd"].fillna(0),
                    marker="o",
                    capsize=3,
                    label=encoder_state,
                )
            classes = results.loc[results["encoder"] == method, "n_classes"].median()
            ax.axhline(1 / classes, color="grey", ls=":", label="chance")
            ax.set(
                xscale="log",
                title=f"{labels[method]}, {regime}",
                xlabel="share of training wells labelled",
                ylabel=f"accuracy, held-out plate ({data_label})",
            )
            ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def mask_sweep_curves(
    sweep: pd.DataFrame, tasks: Mapping[str, str], claimed_ratio: float, ratios: Sequence[float], data_label: str
) -> plt.Figure:
    """Mean mAP against the mask ratio per task (panels) and modality (lines), the claimed ratio marked."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), sharey=True)
    for ax, (task, title) in zip(axes, tasks.items(), strict=True):
        curves = sweep[sweep["task"] == task].groupby("row", sort=True)
        for label, curve in curves:
            ax.plot(curve["mask_ratio"], curve["mean_average_precision"], marker="o", label=label.split(" / ")[1])
        ax.axvline(claimed_ratio, color="grey", ls=":", lw=1)
        ax.set(
            title=title,
            xlabel="mask ratio (equal training compute)",
            ylabel=f"mean mAP ({data_label})",
            xticks=list(ratios),
        )
        if len(curves):
            ax.legend(fontsize=8, title="modality", title_fontsize=8)
        else:
            ax.text(0.5, 0.5, "no replicable perturbation to match", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def mae_loss(curves: pd.DataFrame) -> plt.Figure:
    """MAE's masked-patch loss (raw and ``smoothed``) per step, one panel per set of ``images``."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, (name, run_curve) in zip(axes, curves.groupby("images", sort=False), strict=True):
        ax.plot(
            run_curve["step"],
            run_curve["loss"],
            lw=0.5,
            alpha=0.4,
            color="steelblue",
            marker="." if len(run_curve) < 30 else None,
        )
        ax.plot(run_curve["step"], run_curve["smoothed"], lw=2, color="steelblue")
        ax.axhline(1.0, ls=":", color="grey")
        ax.set(xlabel="step", ylabel="masked-patch loss", title=f"MAE on the {name}")
    fig.tight_layout()
    return fig


def mae_reconstructions(recon, examples: Sequence[str]) -> tuple[plt.Figure, pd.DataFrame]:
    """Per example crop and channel: the crop, what MAE's encoder sees, and the reconstruction
    (:func:`cellstudy.applications.interpret.mae_reconstruction`); with the mean of each panel as source data.
    """
    rows = [("crop", recon.original), ("visible to the encoder", recon.masked), ("reconstruction", recon.reconstructed)]
    fig, axes = plt.subplots(
        len(examples) * len(rows), len(CHANNELS), figsize=(1.9 * len(CHANNELS), 1.9 * len(examples) * len(rows))
    )
    source = []
    for e, compound in enumerate(examples):
        for r, (title, stack) in enumerate(rows):
            for c, channel in enumerate(CHANNELS):
                ax = axes[e * len(rows) + r, c]
                low, high = np.nanpercentile(recon.original[e, c].numpy(), [1, 99])
                ax.imshow(stack[e, c].numpy(), cmap="gray", vmin=low, vmax=high)
                ax.set_xticks([])
                ax.set_yticks([])
                if e == 0 and r == 0:
                    ax.set_title(channel)
                if c == 0:
                    ax.set_ylabel(f"{compound}\n{title}" if r == 0 else title, fontsize=8)
                source.append(
                    {
                        "compound": compound,
                        "row": title,
                        "channel": channel,
                        "mean": float(np.nanmean(stack[e, c].numpy())),
                        "hidden_fraction": float(recon.hidden[e, c].mean()),
                    }
                )
    fig.tight_layout()
    return fig, pd.DataFrame(source)


DINO_PANELS = {
    "loss": "loss (cross-entropy)",
    "teacher_entropy": "teacher entropy (nats)",
    "teacher_kl_uniform": "KL(teacher ‖ uniform) (nats)",
    "embedding_std": "embedding spread",
}
"""The columns of a DINO training log that :func:`dino_training` plots, with their titles."""


def dino_training(curves: pd.DataFrame, log_k: float) -> plt.Figure:
    """DINO's loss and collapse diagnostics per step (:data:`DINO_PANELS`), one line per set of ``images``;
    ``log_k``: the entropy of uniform output.
    """
    fig, axes = plt.subplots(1, len(DINO_PANELS), figsize=(16, 3.4))
    for ax, (column, label) in zip(axes, DINO_PANELS.items(), strict=True):
        for name, group in curves.groupby("images", sort=False):
            ax.plot(group["step"], group[column], lw=1.2, label=name, marker="." if len(group) < 30 else None)
        if column == "teacher_entropy":
            ax.axhline(log_k, ls=":", color="grey", label="log K (uniform)")
        ax.set(xlabel="step", title=label)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def attention_maps(
    crops_shown: Sequence[np.ndarray], attention: np.ndarray, examples: Sequence[str], view: int
) -> tuple[plt.Figure, pd.DataFrame]:
    """Each example crop's composite and its class-token attention (mean of heads, then each head) over the DNA
    channel, as a multiple of even attention; with every map's values as source data.
    """
    relative = attention * attention[0, 0].size  # 1 = attention spread evenly over the patches
    n_heads = attention.shape[1]
    top = max(2.0, float(relative.max()))  # one scale for all maps, so that flat maps look flat
    fig, axes = plt.subplots(
        len(examples), n_heads + 2, figsize=(2.4 * (n_heads + 2) + 0.8, 2.5 * len(examples)), layout="constrained"
    )
    source = []
    for e, compound in enumerate(examples):
        axes[e, 0].imshow(composite_rgb(crops_shown[e]))
        axes[e, 0].set_ylabel(compound)
        maps = [("mean of heads", relative[e].mean(axis=0))] + [
            (f"head {h + 1}", relative[e, h]) for h in range(n_heads)
        ]
        for ax, (title, heat) in zip(axes[e, 1:], maps, strict=True):
            ax.imshow(rescale_percentile(crops_shown[e][CHANNELS.index("DNA")]), cmap="gray")
            shown = ax.imshow(
                heat, cmap="inferno", alpha=0.6, vmin=0, vmax=top, extent=(-0.5, view - 0.5, view - 0.5, -0.5)
            )
            source += [
                {"compound": compound, "map": title, "row": r, "col": c, "attention_x_patches": float(v)}
                for (r, c), v in np.ndenumerate(heat)
            ]
        for ax, title in zip(axes[e], ["composite"] + [title for title, _ in maps], strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            if e == 0:
                ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="attention × number of patches (1 = even)")
    return fig, pd.DataFrame(source)


def realism_panels(counts: pd.DataFrame, comparison: pd.DataFrame, features: Sequence[str]) -> plt.Figure:
    """Cells per field, and each measurement of :mod:`cellstudy.simulation.realism`, real against simulated."""
    fig, axes = plt.subplots(3, 5, figsize=(18, 10))
    sns.stripplot(data=counts, x="source", y="cells per 1080² field", ax=axes.flat[0], order=["real", "simulated"])
    axes.flat[0].set_title("cells per field", fontsize=9)
    for ax, feature in zip(axes.flat[1:], features, strict=False):
        sns.violinplot(
            data=comparison[comparison["feature"] == feature],
            x="source",
            y="value",
            ax=ax,
            order=["real", "simulated"],
            cut=0,
            inner="quartile",
            log_scale="Area" in feature,
        )
        ax.set_title(feature.replace("_3_00_256", ""), fontsize=9)
        ax.set(xlabel="", ylabel="")
    for ax in axes.flat[1 + len(features) :]:
        ax.remove()
    fig.tight_layout()
    return fig


def calibration_bars(fractions: pd.DataFrame, paper_points: pd.Series | None) -> plt.Figure:
    """Simulated fraction retrieved per task and modality and method, the paper's CellProfiler points beside it."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.barplot(data=fractions, y="row", x="fraction_retrieved", hue="method", ax=ax, orient="h")
    if paper_points is not None:
        order = [label.get_text() for label in ax.get_yticklabels()]
        ax.scatter(
            paper_points.reindex(order),
            range(len(order)),
            color="black",
            marker="D",
            zorder=3,
            label="paper, CellProfiler (U2OS)",
        )
    ax.set(xlabel="fraction retrieved (simulated data except the paper's points)", ylabel="", xlim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plate_effects(pca_table: pd.DataFrame, methods: Sequence[str], labels: Mapping[str, str]) -> plt.Figure:
    """The first two principal components of each method's well profiles before and after post-processing,
    coloured by plate.
    """
    fig, axes = plt.subplots(2, len(methods), figsize=(3.2 * len(methods), 6.4))
    for column, method in enumerate(methods):
        for row, stage in enumerate(("before", "after")):
            part = pca_table[(pca_table["method"] == method) & (pca_table["stage"] == stage)]
            ax = axes[row, column]
            sns.scatterplot(data=part, x="PC1", y="PC2", hue="plate", ax=ax, s=8, linewidth=0, legend=column == 0)
            ax.set(title=f"{labels[method]}, {stage}", xticks=[], yticks=[], xlabel="PC 1", ylabel="PC 2")
            if column == 0:
                ax.legend(fontsize=6, title="plate", title_fontsize=7, loc="best", markerscale=1.5)
    fig.tight_layout()
    return fig


def real_similarity(
    real_profiles: Mapping[str, pd.DataFrame], labels: Mapping[str, str], replicate: str = "FK-866"
) -> tuple[plt.Figure, pd.DataFrame, pd.DataFrame]:
    """Cosine similarity of the real fields' standardised profiles, one heat map per method; with every pair as
    source data and, for each of the two ``replicate`` wells, the rank of the other among all wells.
    """
    fig, axes = plt.subplots(1, len(real_profiles), figsize=(6 * len(real_profiles), 5.2))
    ranks, similarities = [], []
    for ax, (method, table) in zip(axes, real_profiles.items(), strict=True):
        table = table.dropna(axis="columns")  # classical features that some field cannot measure
        similarity = cosine_similarity_matrix(standardise(table))
        names = [f"{c} {w}" for c, w in zip(table["Metadata_compound"], table["Metadata_Well"], strict=True)]
        frame = pd.DataFrame(similarity, index=names, columns=names)
        similarities.append(
            frame.rename_axis("well")
            .reset_index()
            .melt(id_vars="well", var_name="other_well", value_name="cosine")
            .assign(method=method)
        )
        sns.heatmap(frame, ax=ax, cmap="vlag", vmin=-1, vmax=1, square=True, cbar_kws={"shrink": 0.6})
        ax.set_title(f"{labels[method]} (real fields)")
        pair = np.flatnonzero(table["Metadata_compound"].to_numpy() == replicate)
        for query, partner in ((pair[0], pair[1]), (pair[1], pair[0])):
            order = [i for i in np.argsort(-similarity[query]) if i != query]
            ranks.append(
                {
                    "method": labels[method],
                    "query": names[query],
                    f"rank of the other {replicate} well": order.index(partner) + 1,
                    "wells ranked": len(order),
                }
            )
    fig.tight_layout()
    return fig, pd.concat(similarities, ignore_index=True), pd.DataFrame(ranks)


def sample_pixels(stack: Mapping[tuple[str, str], np.ndarray], n_pixels: int, seed: int = 0) -> pd.DataFrame:
    """``n_pixels`` random pixels per channel of each field (keyed by compound and well), in long form."""
    rng = np.random.default_rng(seed)
    samples = []
    for (compound, well), image in stack.items():
        flat = image.reshape(len(CHANNELS), -1)
        picked = rng.choice(flat.shape[1], n_pixels, replace=False)
        for name, values in zip(CHANNELS, flat[:, picked], strict=True):
            samples.append(pd.DataFrame({"compound": compound, "well": well, "channel": name, "intensity": values}))
    return pd.concat(samples, ignore_index=True)


def intensity_densities(samples: pd.DataFrame) -> sns.FacetGrid:
    """Density of pixel intensities per channel (log scale), one line per field's compound."""
    grid = sns.displot(
        data=samples,
        x="intensity",
        hue="compound",
        col="channel",
        kind="kde",
        log_scale=True,
        common_norm=False,
        facet_kws={"sharey": False},
        height=2.8,
        aspect=1.0,
        linewidth=1,
    )
    grid.set_titles("{col_name}")
    return grid


def nuclei_overview(
    counts: pd.DataFrame,
    stack: Mapping[tuple[str, str], np.ndarray],
    labels: Mapping[tuple[str, str], np.ndarray],
    shown: Sequence[str],
) -> plt.Figure:
    """Nuclei per field, and the segmentation's outlines on the DNA channel of the ``shown`` compounds."""
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(16, 5), gridspec_kw={"width_ratios": [1.2] + [1] * len(shown)})
    sns.barplot(data=counts, y=counts["compound"] + " " + counts["well"], x="nuclei", ax=axes[0], color="steelblue")
    axes[0].set(ylabel="", xlabel="nuclei in the field", title="Nuclei per field")
    for ax, compound in zip(axes[1:], shown, strict=True):
        key = next(k for k in stack if k[0] == compound)
        dna = rescale_percentile(stack[key][CHANNELS.index("DNA")])
        ax.imshow(dna, cmap="gray")
        ax.contour(labels[key] > 0, levels=[0.5], colors="yellow", linewidths=0.5)
        ax.set_title(f"{compound}: {labels[key].max()} nuclei")
        ax.set_axis_off()
    fig.tight_layout()
    return fig
