"""Tests for cellstudy.applications.query on consensus tables with planted answers: a clean hit, an inhibitor that
looks like the anti-correlated gene, a polypharmacology compound driven by an unannotated gene; cosines
against scikit-learn, p-values against a brute-force count over all pairs and uniform on pure noise,
q-values against scipy's Benjamini-Hochberg."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, kstest
from sklearn.metrics.pairwise import cosine_similarity

from cellstudy import cli
from cellstudy.applications import query
from cellstudy.columns import N_PERTURBATIONS

N_GENES, N_FEATURES, N_FILLERS = 12, 30, 30
GENES = [f"G{i:02d}" for i in range(N_GENES)]
TIMEPOINTS = {"compound": [24, 48], "crispr": [144], "orf": [96]}
HIT, INHIBITOR, POLY = "hit", "inhibitor", "poly"


def row(modality: str, sample: str, timepoint: int, negcon: bool = False, **extra) -> dict:
    return {
        "Metadata_cell_type": "U2OS",
        "Metadata_modality": modality,
        "Metadata_timepoint": timepoint,
        "Metadata_broad_sample": sample,
        "Metadata_negcon": negcon,
        **extra,
    }


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def make_table(rows: list[dict], vectors: list[np.ndarray]) -> pd.DataFrame:
    features = pd.DataFrame(np.array(vectors), columns=[f"f{i}" for i in range(N_FEATURES)])
    return pd.concat([pd.DataFrame(rows), features], axis=1)


@pytest.fixture(scope="module")
def directions() -> dict[str, np.ndarray]:
    """A random direction per gene."""
    rng = np.random.default_rng(1)
    return {gene: rng.normal(size=N_FEATURES) for gene in GENES}


@pytest.fixture(scope="module")
def planted(directions) -> pd.DataFrame:
    """Per gene two CRISPR guides (+ gene) and one ORF (+ half the gene), with noise; negative controls;
    compounds at two time points: HIT = G00 (annotated G00 and the unperturbed G99), INHIBITOR = -G01
    (annotated G01), POLY annotated G02 but built from G03 (its part orthogonal to G02), and random
    fillers annotated to G04-G11."""
    rng = np.random.default_rng(2)

    def noisy(vector: np.ndarray, sd: float = 0.15) -> np.ndarray:
        return vector + sd * rng.normal(size=N_FEATURES)

    rows, vectors = [], []
    for gene, direction in directions.items():
        for guide in range(2):
            rows.append(row("crispr", f"sg{gene}_{guide}", 144, Metadata_gene=gene, Metadata_target_list=gene))
            vectors.append(noisy(direction))
        rows.append(row("orf", f"orf{gene}", 96, Metadata_gene=gene, Metadata_target_list=gene))
        vectors.append(noisy(0.5 * direction))
    rows += [row("crispr", "sgControl", 144, negcon=True), row("orf", "orfLacZ", 96, negcon=True, Metadata_gene="LacZ")]
    vectors += [rng.normal(size=N_FEATURES), rng.normal(size=N_FEATURES)]
    annotated, driver = unit(directions["G02"]), directions["G03"]
    compounds = {
        HIT: ("G00|G99", directions["G00"]),
        INHIBITOR: ("G01", -directions["G01"]),
        POLY: ("G02", driver - (driver @ annotated) * annotated),
        **{f"filler{i}": (GENES[4 + i % 8], rng.normal(size=N_FEATURES)) for i in range(N_FILLERS)},
    }
    for timepoint in TIMEPOINTS["compound"]:
        for name, (targets, vector) in compounds.items():
            rows.append(
                row(
                    "compound", f"BRD-{name.upper()}", timepoint, Metadata_pert_iname=name, Metadata_target_list=targets
                )
            )
            vectors.append(noisy(vector))
        rows.append(row("compound", "DMSO", timepoint, negcon=True, Metadata_pert_iname="DMSO"))
        vectors.append(rng.normal(size=N_FEATURES))
    return make_table(rows, vectors)


@pytest.fixture(scope="module")
def hit_ranking(planted) -> pd.DataFrame:
    return query.rank_genes(planted, HIT)


def genes_of(results: pd.DataFrame, modality: str, timepoint: int = 48) -> pd.DataFrame:
    """One list of :func:`query.rank_genes`, indexed by gene."""
    chosen = (results["Metadata_genetic_modality"] == modality) & (results["Metadata_timepoint"] == timepoint)
    return results[chosen].set_index(query.GENE)


def features(table: pd.DataFrame) -> np.ndarray:
    return table.filter(regex=r"^f\d+$").to_numpy()


def hit_profile(planted: pd.DataFrame) -> pd.DataFrame:
    """The HIT compound's row at the later time point."""
    return planted[(planted["Metadata_broad_sample"] == "BRD-HIT") & (planted["Metadata_timepoint"] == 48)]


def test_gene_profiles_average_the_guides_keep_the_orf_and_leave_out_controls(planted):
    crispr = query.gene_profiles(planted, "crispr").set_index(query.GENE)
    orf = query.gene_profiles(planted, "orf").set_index(query.GENE)
    assert sorted(crispr.index) == sorted(orf.index) == GENES  # negative controls (incl. the named ORF one) left out
    guides = planted[planted["Metadata_broad_sample"].isin(["sgG05_0", "sgG05_1"])]
    np.testing.assert_allclose(features(crispr.loc[["G05"]])[0], features(guides).mean(axis=0))
    the_orf = planted[planted["Metadata_broad_sample"] == "orfG05"]
    np.testing.assert_allclose(features(orf.loc[["G05"]])[0], features(the_orf)[0])
    assert (crispr[N_PERTURBATIONS] == 2).all() and (orf[N_PERTURBATIONS] == 1).all()
    with pytest.raises(ValueError, match="'compound'"):
        query.gene_profiles(planted, "compound")


def test_cosine_is_sklearns_and_score_its_absolute_value(planted, hit_ranking):
    for modality in ("crispr", "orf"):
        ranked = genes_of(hit_ranking, modality)
        profiles = query.gene_profiles(planted, modality).set_index(query.GENE).loc[ranked.index]
        expected = cosine_similarity(features(hit_profile(planted)), features(profiles))[0]
        np.testing.assert_allclose(ranked["cosine"], expected)
        np.testing.assert_allclose(ranked["score"], np.abs(expected))


def test_lists_per_compound_time_point_and_genetic_group_ranked_by_score(hit_ranking):
    lists = hit_ranking.groupby(query.GENE_LIST)
    assert lists.ngroups == len(TIMEPOINTS["compound"]) * 2
    for _, ranked in lists:
        assert sorted(ranked["rank"]) == list(range(1, N_GENES + 1))
        assert (np.diff(ranked["score"].to_numpy()) <= 0).all()  # sorted by rank = descending score


def test_clean_hit_ranks_its_target_first(hit_ranking):
    for modality in ("crispr", "orf"):
        ranked = genes_of(hit_ranking, modality)
        assert ranked.loc["G00", "rank"] == 1 and ranked.loc["G00", "cosine"] > 0.9
        assert ranked.loc["G00", "is_annotated_target"]
        assert not ranked.drop(index="G00")["is_annotated_target"].any()
        assert ranked.loc["G00", "p_value"] == ranked["p_value"].min()


def test_inhibitor_ranks_its_target_first_with_the_negative_sign_shown(planted):
    ranked = genes_of(query.rank_genes(planted, INHIBITOR), "orf")
    assert ranked.loc["G01", "rank"] == 1
    assert ranked.loc["G01", "cosine"] < -0.9 and ranked.loc["G01", "score"] > 0.9


def test_polypharmacology_compound_ranks_its_driver_not_its_annotated_target(planted):
    ranked = genes_of(query.rank_genes(planted, POLY), "crispr")
    assert ranked.loc["G03", "rank"] == 1 and not ranked.loc["G03", "is_annotated_target"]
    assert ranked.loc["G02", "rank"] > N_GENES // 2 and ranked.loc["G02", "p_value"] > 0.05


def test_p_values_count_all_pairs_of_the_comparison_and_q_values_are_bh(planted, hit_ranking):
    compounds = query.compound_profiles(planted)
    compounds = compounds[compounds["Metadata_timepoint"] == 48]
    for modality in ("crispr", "orf"):
        ranked = genes_of(hit_ranking, modality)
        genes = query.gene_profiles(planted, modality)
        every_pair = np.abs(cosine_similarity(features(compounds), features(genes))).ravel()
        assert every_pair.size == (3 + N_FILLERS) * N_GENES
        expected = [(every_pair >= score - 1e-12).mean() for score in ranked["score"]]
        np.testing.assert_allclose(ranked["p_value"], expected)
        np.testing.assert_allclose(ranked["q_value"], false_discovery_control(ranked["p_value"]))


def test_p_values_of_one_compound_are_uniform_on_pure_noise():
    rng = np.random.default_rng(3)
    rows = [row("orf", f"orf{i}", 96, Metadata_gene=f"N{i}") for i in range(400)]
    rows += [row("compound", f"BRD-NOISE{i}", 48, Metadata_pert_iname=f"noise{i}") for i in range(20)]
    noise = make_table(rows, list(rng.normal(size=(len(rows), N_FEATURES))))
    results = query.rank_genes(noise, "noise0", ["orf"])
    assert kstest(results["p_value"], "uniform").pvalue > 0.01
    assert results["p_value"].mean() == pytest.approx(0.5, abs=0.05)


def test_reverse_query_agrees_with_the_forward_one_pair_by_pair(planted):
    reverse = query.rank_compounds(planted, "G00")
    assert set(reverse["Metadata_pert_iname"]) == {HIT, INHIBITOR, POLY, *(f"filler{i}" for i in range(N_FILLERS))}
    top = reverse[reverse["rank"] == 1]
    assert (top["Metadata_pert_iname"] == HIT).all() and len(top) == reverse.groupby(query.COMPOUND_LIST).ngroups
    forward = pd.concat([query.rank_genes(planted, name) for name in (HIT, INHIBITOR, POLY, "filler0")])
    keys = [*query.GENE_LIST, query.GENE]
    both = reverse.merge(forward, on=keys, suffixes=("_reverse", "_forward"), validate="one_to_one")
    assert len(both) == 4 * len(reverse.groupby(query.COMPOUND_LIST))
    for column in ("cosine", "score", "p_value"):
        np.testing.assert_allclose(both[f"{column}_reverse"], both[f"{column}_forward"])


def test_compound_found_by_broad_sample_or_name_in_any_case(planted, hit_ranking):
    pd.testing.assert_frame_equal(query.rank_genes(planted, "BRD-HIT"), hit_ranking)
    pd.testing.assert_frame_equal(query.rank_genes(planted, "HIT"), hit_ranking)
    assert query.rank_compounds(planted, "g00")[query.GENE].eq("G00").all()


def test_unknown_names_raise_naming_them_with_close_matches(planted):
    with pytest.raises(ValueError, match=r"compound 'hitt' .*close matches: \['hit'"):
        query.rank_genes(planted, "hitt")
    with pytest.raises(ValueError, match=r"gene 'G00X' .*close matches: \['G00'"):
        query.rank_compounds(planted, "G00X")
    with pytest.raises(ValueError, match="cell type 'A549'.*U2OS"):
        query.rank_genes(planted, HIT, cell_type="A549")


def test_annotation_missing_when_the_target_list_is_unknown(planted):
    table = planted.copy()
    table.loc[table["Metadata_pert_iname"] == HIT, "Metadata_target_list"] = np.nan
    assert query.rank_genes(table, HIT)["is_annotated_target"].isna().all()


def test_well_level_profiles_raise_naming_a_repeated_perturbation(planted):
    wells = pd.concat([planted, planted[planted["Metadata_broad_sample"] == "sgG03_1"]], ignore_index=True)
    with pytest.raises(ValueError, match="sgG03_1.*consensus"):
        query.rank_genes(wells, HIT)


def test_all_zero_profile_raises_naming_it(planted):
    table = planted.copy()
    table.loc[table["Metadata_broad_sample"] == "BRD-HIT", [f"f{i}" for i in range(N_FEATURES)]] = 0.0
    with pytest.raises(ValueError, match="BRD-HIT"):
        query.rank_genes(table, HIT)


def test_true_target_ranks_agree_with_rank_genes_and_the_planted_truth(planted):
    truth = pd.DataFrame(
        [
            ("U2OS", "BRD-HIT", "G00", True, True),
            ("U2OS", "BRD-POLY", "G02", True, False),
            ("U2OS", "BRD-POLY", "G03", False, True),
        ],
        columns=["Metadata_cell_type", "Metadata_broad_sample", "Metadata_gene", "annotated", "shares_phenotype"],
    )
    keys = ["Metadata_pert_iname", "Metadata_genetic_modality", "Metadata_timepoint"]
    ranks = query.true_target_ranks(planted, truth).set_index(keys).sort_index()
    assert len(ranks) == (3 + N_FILLERS) * 2 * 2  # every compound has a perturbed target, 2 time points x 2 modalities
    assert (ranks["n_genes"] == N_GENES).all()
    for name in (HIT, INHIBITOR, POLY):
        ranked = query.rank_genes(planted, name)
        best = ranked[ranked["is_annotated_target"].astype(bool)].groupby(query.GENE_LIST)["rank"].min()
        expected = best.reset_index().set_index(["Metadata_genetic_modality", "Metadata_timepoint"])["rank"]
        np.testing.assert_array_equal(ranks.loc[name, "annotated_rank"].sort_index(), expected.sort_index())
    hit, poly = ranks.loc[(HIT, "crispr", 48)], ranks.loc[(POLY, "crispr", 48)]
    columns = ["annotated_target", "annotated_rank", "true_target", "true_rank", "polypharmacology"]
    assert hit[columns].tolist() == ["G00", 1, "G00", 1, False]
    assert poly["annotated_rank"] > N_GENES // 2 and poly[columns[2:]].tolist() == ["G03", 1, True]
    assert np.isnan(ranks.loc[(INHIBITOR, "crispr", 48), "true_rank"])  # no truth given for it


def test_compounds_without_a_perturbed_target_are_skipped(planted):
    table = planted.copy()
    table.loc[table["Metadata_pert_iname"] == POLY, "Metadata_target_list"] = "G99"
    assert POLY not in set(query.true_target_ranks(table)["Metadata_pert_iname"])


def test_as_text_shows_the_top_of_every_list_headed_by_what_it_shares(hit_ranking):
    text = query.as_text(hit_ranking, query.GENE_LIST, top=2)
    blocks = text.split("\n\n")
    assert len(blocks) == hit_ranking.groupby(query.GENE_LIST).ngroups
    for block in blocks:
        header, columns, *lines = block.splitlines()
        assert "pert_iname=hit" in header and "genetic_modality=" in header
        assert columns.split()[0] == "gene" and len(lines) == 2 and lines[0].split()[0] == "G00"


def test_cli_prints_the_ranked_table_and_writes_it(planted, tmp_path, capsys):
    path, out = tmp_path / "consensus.csv", tmp_path / "ranked.csv"
    planted.to_csv(path, index=False)
    cli.main(["query", "compound", HIT, "--profiles", str(path), "--top", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    first_words = [line.split()[0] for line in printed.splitlines() if line.strip()]
    assert printed.count("pert_iname=hit") == 4 and first_words.count("G00") == 4 and len(first_words) == 4 * 5
    written = pd.read_csv(out)
    np.testing.assert_allclose(written["p_value"], query.rank_genes(planted, HIT)["p_value"])
    cli.main(["query", "gene", "G01", "--profiles", str(path), "--modality", "orf"])
    printed = capsys.readouterr().out
    assert printed.count("gene=G01") == 2 and "BRD-INHIBITOR" in printed and "crispr" not in printed
    assert printed.count(f"timepoint={TIMEPOINTS['compound'][0]}") == 1


def test_cli_query_of_a_wide_table_gives_no_performance_warning(planted, tmp_path, capsys):
    extra = pd.DataFrame(
        np.random.default_rng(4).normal(size=(len(planted), 200)),
        columns=[f"f{i}" for i in range(N_FEATURES, N_FEATURES + 200)],
    )
    wide = pd.concat([planted, extra], axis=1)  # over 100 features: pandas warns of fragmented frames it inserts into
    path, out = tmp_path / "consensus.csv", tmp_path / "ranked.csv"
    wide.to_csv(path, index=False)
    for kind, name, rank in (("compound", HIT, query.rank_genes), ("gene", "G00", query.rank_compounds)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.PerformanceWarning)
            cli.main(["query", kind, name, "--profiles", str(path), "--out", str(out)])
        assert capsys.readouterr().out.strip()
        np.testing.assert_allclose(pd.read_csv(out)["cosine"], rank(wide, name)["cosine"])


@pytest.mark.parametrize(
    "arguments, rank",
    [
        (["compound", "hitt"], lambda table: query.rank_genes(table, "hitt")),
        (["gene", "G00X"], lambda table: query.rank_compounds(table, "G00X")),
        (["compound", HIT, "--cell-type", "A549"], lambda table: query.rank_genes(table, HIT, cell_type="A549")),
    ],
)
def test_cli_reports_an_unknown_name_in_one_line_without_a_traceback(planted, tmp_path, capsys, arguments, rank):
    path = tmp_path / "consensus.csv"
    planted.to_csv(path, index=False)
    with pytest.raises(ValueError) as raised:
        rank(planted)
    with pytest.raises(SystemExit) as exited:
        cli.main(["query", *arguments, "--profiles", str(path)])
    assert exited.value.code == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == f"cellstudy: error: {raised.value}\n"
    assert "close matches" in printed.err or "U2OS" in printed.err
