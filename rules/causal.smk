# Causal tests of retrieval heads (STUDY.md section 7).
# knockout: a model's own top-K retrieval heads vs K random heads (Figure 4);
# patching: the Real (Full) model's heads patched into each synthetic-data model (Table 3).


include: "functions/causal.smk"


CAUSAL = config["causal"]
# Models whose own heads are knocked out (default: the real-data model and every synthetic one),
# and synthetic models that receive the real-data model's heads by patching (default: all).
# A named condition outside the study (study.*_conditions, or a user dataset of datasets:, which
# takes part for the tasks it has a file for) is refused here, naming the key.
from synthctx.config_checks import causal_conditions

KNOCKOUT_CONDITIONS, PATCH_CONDITIONS = causal_conditions(config)

from synthctx.causal.eval_split import split_error, task_examples
from synthctx.causal.settings import KnockoutSettings, PatchingSettings

# The ranking and the causal part must fit the configured eval split of every task (the jobs
# check the built split again: the data stage keeps fewer examples when too few fit the budget).
for _task in TASKS:
    _eval_n = study_vocabulary.task_data_settings(config, _task)[1]
    _problem = split_error(
        _task,
        _eval_n,
        ranking_examples(_task),
        causal_examples(_task),
        f"data.eval_examples / data.{_task}.eval_examples",
    )
    if _problem:
        _config_error("causal.examples", _problem)


rule knockout:
    input:
        model=f"{model_dir('{model}')}/config.json",
        eval=eval_data("{model}", "{task}"),
        heads=lambda wc: head_scores(wc.model, wc.task, wc.condition),
        adapter=lambda wc: causal_adapter(wc.model, wc.task, wc.condition),
    output:
        study_path("causal/{model}/{task}/{condition}/knockout.parquet"),
    log:
        study_path("logs/causal/knockout/{model}/{task}/{condition}.log"),
    benchmark:
        study_path("logs/causal/knockout/{model}/{task}/{condition}.benchmark.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime="3h",
        gpu=gpu_resources(),
    params:
        settings=lambda wc: load_settings(wc.model),
        # every knockout setting in one dict (synthctx.causal.settings; disjoint parts of the
        # eval split: the heads' ranking examples come first)
        knockout=lambda wc: KnockoutSettings.from_config(config, wc.task).as_params(),
    script:
        "../workflow/scripts/knockout.py"


rule patching:
    input:
        model=f"{model_dir('{model}')}/config.json",
        eval=eval_data("{model}", "{task}"),
        # the donor: the Real (Full) model of the recipient's training recipe (real_full, or
        # real_full__<recipe> for a recipe condition), whose heads also pick the Intersection
        donor_adapter=lambda wc: causal_adapter(wc.model, wc.task, patch_donor(wc.synthetic)),
        recipient_adapter=lambda wc: causal_adapter(wc.model, wc.task, wc.synthetic),
        donor_heads=lambda wc: head_scores(wc.model, wc.task, patch_donor(wc.synthetic)),
        recipient_heads=lambda wc: head_scores(wc.model, wc.task, wc.synthetic),
    output:
        study_path("causal/{model}/{task}/{synthetic}/patching.parquet"),
    log:
        study_path("logs/causal/patching/{model}/{task}/{synthetic}.log"),
    benchmark:
        study_path("logs/causal/patching/{model}/{task}/{synthetic}.benchmark.tsv")
    wildcard_constraints:
        # recipients: the synthetic conditions and the user datasets, and their recipe conditions
        synthetic=study_vocabulary.wildcard_pattern(
            study_vocabulary.condition_names("synthetic") + USER + RECIPE_POINTS
        ),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime="3h",
        gpu=gpu_resources(),
    params:
        settings=lambda wc: load_settings(wc.model),
        patching=lambda wc: PatchingSettings.from_config(config, wc.task).as_params(),
    script:
        "../workflow/scripts/patching.py"


rule knockout_figure:
    input:
        lambda wc: [
            study_path(f"causal/{wc.model}/{task}/{condition}/knockout.parquet")
            for task in TASKS
            for condition in KNOCKOUT_CONDITIONS
            if condition in task_conditions(task)
        ],
    output:
        figure=report(
            study_path("figures/{model}/figure4.png"),
            caption="../report/figure4.rst",
            category="Causal tests",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "Figure 4 (knockout)"},
        ),
        summary=study_path("causal/{model}/knockout_summary.parquet"),
    log:
        study_path("logs/causal/figure4/{model}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        resamples=config["evaluate"]["bootstrap_resamples"],
        alpha=config["evaluate"]["alpha"],
        seed=STUDY["seed"],
        user_labels=USER_LABELS,
    script:
        "../workflow/scripts/figure4.py"


rule patching_table:
    input:
        lambda wc: [
            study_path(f"causal/{wc.model}/{task}/{synthetic}/patching.parquet")
            for task in TASKS
            for synthetic in PATCH_CONDITIONS
            if synthetic in task_conditions(task)
        ],
    output:
        markdown=report(
            study_path("tables/{model}/table3.md"),
            caption="../report/table3.rst",
            category="Causal tests",
            subcategory="{model}",
            labels={"model": "{model}", "table": "Table 3 (patching)"},
        ),
        table=study_path("tables/{model}/table3.parquet"),
    log:
        study_path("logs/causal/table3/{model}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        resamples=config["evaluate"]["bootstrap_resamples"],
        alpha=config["evaluate"]["alpha"],
        seed=STUDY["seed"],
        user_labels=USER_LABELS,
    script:
        "../workflow/scripts/table3.py"


# Named targets (no wildcards): `snakemake figure4`, `table3`, for every study model.
rule figure4:
    input:
        [f for m in MODELS for f in figure4_targets(m)],


rule table3:
    input:
        [f for m in MODELS for f in table3_targets(m)],
