"""The claims page of one model: every claim of the paper with this run's statistic and a verdict.

Input:  results/{study}/tables/{model}/table1.parquet (scores, p-values, distinct predictions, positive
        control); results/{study}/eval/{model}/{task}/predictions.parquet (paired bootstraps of C1/C2);
        results/{study}/heads/{model}/{task}/per_example/{condition}.parquet (C3, C7);
        results/{study}/analysis/{model}/correlations.parquet (C4); results/{study}/tables/{model}/table2.parquet
        and table3.parquet (C7, C6 context); results/{study}/causal/{model}/{task}/{condition}/knockout.parquet
        and .../{synthetic}/patching.parquet (C5, C6); results/{study}/heads/{model}/niah/set{1,2}.parquet (C8).
Output: results/{study}/reports/{model}/claims.md, results/{study}/reports/{model}/claims.parquet (kind claims).
Feeds:  the Claims section of the HTML report.
"""

from pathlib import Path

from synthctx.analysis.claims import make_claims, study_paths
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
settings = sm.params.settings
# The study's folder, results/{study}/, holds every input: this page is its reports/{model}/claims.parquet.
study = str(Path(sm.output.table).parents[2])
paths = study_paths(study, settings["model"], settings["tasks"], settings["synthetic"],
                    settings["knockout_conditions"], settings["patch_conditions"],
                    lambda task: settings["trained"][task])
make_claims(paths, sm.output.table, sm.output.markdown, settings, log=log.info)
