"""Every ``Metadata_*`` column the study reads or writes, named once; the decoded-field column of field tables;
and the names of the retrieval tasks.

A profile table has metadata columns (names starting with :data:`METADATA_PREFIX`) and feature columns
(all others). The names follow the CPJUMP1 paper's profiles (pycytominer's ``Metadata_`` convention).
"""

METADATA_PREFIX = "Metadata_"
"""Columns that start with this are metadata; all others are features."""

# Where a well is
PLATE = "Metadata_Plate"
"""Plate barcode: the unit of per-plate normalisation."""
SOURCE_PLATE = "Metadata_source_plate"
"""The real CPJUMP1 barcode a simulated plate (``SIM_<barcode>``) copies the plate map of."""
WELL = "Metadata_Well"
"""Well position, e.g. ``A01``."""
ROW = "Metadata_row"
"""Plate row letter of a well."""
COL = "Metadata_col"
"""Plate column number of a well."""

# What a well holds
SAMPLE = "Metadata_broad_sample"
"""Perturbation identifier (compound, guide or ORF): the unit of replicate retrieval."""
NAME = "Metadata_pert_iname"
"""Perturbation name (the compound's common name, the gene of a guide or ORF)."""
PERT_TYPE = "Metadata_pert_type"
"""``trt``, ``control`` or the empty-well marker of :mod:`cellstudy.data.cpjump1`."""
CONTROL_TYPE = "Metadata_control_type"
"""``negcon``, ``poscon_*`` or empty."""
NEGCON = "Metadata_negcon"
"""Boolean: True for negative-control wells."""
GENE = "Metadata_gene"
"""Gene of a CRISPR guide or ORF."""
TARGET_LIST = "Metadata_target_list"
"""A compound's annotated targets, ``|``-separated."""
MOA_LIST = "Metadata_moa_list"
"""A compound's mechanisms of action, ``|``-separated."""

# Under which condition
CELL_TYPE = "Metadata_cell_type"
"""U2OS or A549."""
MODALITY = "Metadata_modality"
"""``compound``, ``crispr`` or ``orf``."""
GENETIC_MODALITIES = ("crispr", "orf")
"""The modalities that perturb a gene directly."""
TIMEPOINT = "Metadata_timepoint"
"""Hours after perturbation."""
ANOMALY = "Metadata_anomaly"
"""Staining anomaly the CPJUMP1 experiment metadata record for a plate (``none``, or the stain affected:
``Mitotracker``, ``WGA``, ``Phalloidin``)."""

# Written by the study
TARGETS = "Metadata_matching_target"
"""Target genes a profile is matched on (added by the matching tasks)."""
GENETIC_MODALITY = "Metadata_genetic_modality"
"""Compound-gene matching: the genetic modality the compounds were matched with."""
GENETIC_TIMEPOINT = "Metadata_genetic_timepoint"
"""Compound-gene matching: the genetic modality's time point."""
N_PERTURBATIONS = "Metadata_n_perturbations"
"""Perturbations (guides, ORFs) averaged into a gene profile."""
N_TILES = "Metadata_n_tiles"
"""Tiles averaged into a well profile."""
FIELD = "Metadata_Field"
"""Field (site) number of a per-tile profile."""
TILE_Y = "Metadata_TileY"
"""Top row of a tile in its field."""
TILE_X = "Metadata_TileX"
"""Left column of a tile in its field."""
CELL_COUNT = "Metadata_Count_Cells"
"""Cells segmented in a well (classical features)."""
CELL_COUNT_FEATURE = "Count_Cells"
"""The cell count as a feature column (not metadata), for a profile of the cell count alone."""

# Field tables (:mod:`cellstudy.data.fieldstore`)
DECODED_FIELD = "decoded_field"
"""Optional field-table column: the ``.npy`` file holding the field decoded (:mod:`cellstudy.data.decodedstore`),
read in place of its TIFFs."""

# Values of the ``task`` column of retrieval results
TASK = "task"
"""Column naming the retrieval task of a result row."""
REPLICATE_RETRIEVAL = "replicate_retrieval"
SISTER_MATCHING = "sister_matching"
COMPOUND_GENE_MATCHING = "compound_gene_matching"
TASKS = (REPLICATE_RETRIEVAL, SISTER_MATCHING, COMPOUND_GENE_MATCHING)
"""The CPJUMP1 paper's three tasks, from easiest to hardest."""
SUMMARY_COLUMNS = [TASK, CELL_TYPE, MODALITY, TIMEPOINT, GENETIC_MODALITY, GENETIC_TIMEPOINT]
"""Columns that identify one fraction retrieved (the genetic ones for compound-gene matching only)."""
