"""The claims page of one model: every claim of the paper with this run's statistic and a verdict.

Input:  results/tables/{model}/table1.parquet (scores, p-values, distinct predictions, positive
        control); results/eval/{model}/{task}/predictions.parquet (paired bootstraps of C1/C2);
        results/heads/{model}/{task}/per_example/{condition}.parquet (C3, C7);
        results/analysis/{model}/correlations.parquet (C4); results/tables/{model}/table2.parquet
        and table3.parquet (C7, C6 context); results/causal/{model}/{task}/{condition}/knockout.parquet
        and .../{synthetic}/patching.parquet (C5, C6); results/heads/{model}/niah/set{1,2}.parquet (C8).
Output: results/reports/{model}/claims.md, results/reports/{model}/claims.parquet (kind claims).
Feeds:  the Claims section of the HTML report.
"""

from synthctx.analysis.claims import make_claims, study_paths
from synthctx.logging_utils import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
log = setup_logging(sm.log[0])
settings = sm.params.settings
paths = study_paths("results", settings["model"], settings["tasks"], settings["synthetic"],
                    settings["knockout_conditions"], settings["patch_conditions"],
                    lambda task: settings["trained"][task])
make_claims(paths, sm.output.table, sm.output.markdown, settings, log=log.info)
