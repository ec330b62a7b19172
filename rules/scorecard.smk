# scorecard stage: rank every candidate training set of a task (built-in synthetic variants and
# the user's datasets) by the retrieval heads of a cheap probe, before training at full size
# (synthctx.analysis.scorecard). A probe is the study's own training and head detection
# (train_adapter.py, heads.py) with a training-example cap and another output folder,
# results/{study}/scorecard/{model}/{task}/{condition}/; where a probe's settings equal the full study's
# (scorecard.probe_reuse), the study's adapter and head scores are read instead.
# `snakemake scorecard` needs no Table 1; `snakemake scorecard_vs_study` adds the comparison
# with the full study (and so builds it).


include: "functions/scorecard.smk"


from synthctx.analysis import scorecard as scorecard_lib

SCORECARD = config["scorecard"]


rule scorecard_train_set:
    input:
        data=lambda wc: train_data(wc.model, wc.task, wc.condition),
    output:
        study_path("scorecard/{model}/{task}/{condition}/train.parquet"),
    log:
        study_path("logs/scorecard/train_set/{model}/{task}/{condition}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        cap=SCORECARD["train_examples"],
        seed=STUDY["seed"],
    script:
        "../workflow/scripts/scorecard_train_set.py"


# The study's training rule (same script, same params) on the capped set.
rule scorecard_train:
    input:
        data=study_path("scorecard/{model}/{task}/{condition}/train.parquet"),
        model=ancient("resources/models/{model}/config.json"),
    output:
        adapter=study_path("scorecard/{model}/{task}/{condition}/adapter/adapter_model.safetensors"),
        adapter_config=study_path("scorecard/{model}/{task}/{condition}/adapter/adapter_config.json"),
        curve=study_path("scorecard/{model}/{task}/{condition}/adapter/train_curve.parquet"),
    log:
        study_path("logs/scorecard/train/{model}/{task}/{condition}.log"),
    benchmark:
        study_path("logs/scorecard/train/{model}/{task}/{condition}.benchmark.tsv")
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime="4h",
        gpu=gpu_resources(),
    params:
        settings=train_settings_params,
        checkpoint_dir=study_path("checkpoints/scorecard/{model}/{task}/{condition}"),
    script:
        "../workflow/scripts/train_adapter.py"


# The study's head detection (same script, rule heads' params) on the probe's real examples.
rule scorecard_heads:
    input:
        model=lambda wc: f"{model_dir(wc.model)}/config.json",
        eval=lambda wc: eval_data(wc.model, wc.task),
        adapter=lambda wc: f"{probe_adapter_dir(wc.model, wc.task, wc.condition)}/adapter_model.safetensors",
    output:
        scores=study_path("scorecard/{model}/{task}/{condition}/heads.parquet"),
        examples=study_path("scorecard/{model}/{task}/{condition}/per_example.parquet"),
    log:
        study_path("logs/scorecard/heads/{model}/{task}/{condition}.log"),
    benchmark:
        study_path("logs/scorecard/heads/{model}/{task}/{condition}.benchmark.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime="2h",
        gpu=gpu_resources(),
    params:
        model_dir=lambda wc: model_dir(wc.model),
        adapter_dir=lambda wc: probe_adapter_dir(wc.model, wc.task, wc.condition),
        settings=lambda wc: load_settings(wc.model),
        # rule heads' settings slice, with the probe's real examples (scorecard.real_examples,
        # capped by the task's ranking part)
        heads=lambda wc: {
            **rules.heads.params.heads(wc),
            "examples": scorecard_lib.real_examples(config, wc.task),
        },
        seed=STUDY["seed"],
    script:
        "../workflow/scripts/heads.py"


rule scorecard_task:
    input:
        examples=lambda wc: [
            probe_head_examples(wc.model, wc.task, c) for c in scorecard_lib.probed_conditions(config, wc.task)
        ],
        train_sets=lambda wc: [
            probe_train_set(wc.model, wc.task, c) for c in scorecard_lib.probed_conditions(config, wc.task)
        ],
    output:
        table=study_path("scorecard/{model}/{task}/scorecard.parquet"),
        markdown=report(
            study_path("scorecard/{model}/{task}/scorecard.md"),
            caption="../report/scorecard.rst",
            category="Scorecard",
            subcategory="{model}",
            labels={"task": "{task}", "output": "table"},
        ),
        figure=report(
            study_path("figures/{model}/scorecard_{task}.png"),
            caption="../report/scorecard.rst",
            category="Scorecard",
            subcategory="{model}",
            labels={"task": "{task}", "output": "ranked candidates"},
        ),
        stability=study_path("scorecard/{model}/{task}/stability.parquet"),
        stability_figure=report(
            study_path("figures/{model}/scorecard_stability_{task}.png"),
            caption="../report/scorecard_stability.rst",
            category="Scorecard",
            subcategory="{model}",
            labels={"task": "{task}", "output": "stability vs real examples"},
        ),
    log:
        study_path("logs/scorecard/{model}/{task}.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="15m",
    params:
        conditions=lambda wc: scorecard_lib.probed_conditions(config, wc.task),
        labels=lambda wc: {
            c: study_vocabulary.condition_label(c, wc.task) for c in scorecard_lib.probed_conditions(config, wc.task)
        },
        reuse=lambda wc: {c: list(_reuse(wc.task, c)) for c in scorecard_lib.probed_conditions(config, wc.task)},
        costs=lambda wc: {
            c: probe_costs(wc.model, wc.task, c) for c in scorecard_lib.probed_conditions(config, wc.task)
        },
        settings={
            "train_examples": SCORECARD["train_examples"],
            "top_k": config["heads"]["top_k"],
            "resamples": SCORECARD.get("bootstrap_resamples") or config["evaluate"]["bootstrap_resamples"],
            "alpha": config["evaluate"]["alpha"],
            "rank_by": SCORECARD["rank_by"],
            "stability_sizes": list(SCORECARD["stability_sizes"]),
            "stability_draws": SCORECARD["stability_draws"],
            "seed": STUDY["seed"],
        },
    script:
        "../workflow/scripts/scorecard.py"


rule scorecard_compare:
    input:
        scorecards=lambda wc: [scorecard_files(wc.model, t)["table"] for t in TASKS],
        table1=study_path("tables/{model}/table1.parquet"),
        # the study's training and evaluation jobs must have run for their benchmark files
        predictions=lambda wc: [study_path(f"eval/{wc.model}/{t}/predictions.parquet") for t in TASKS],
    output:
        table=study_path("scorecard/{model}/vs_study.parquet"),
        markdown=report(
            study_path("scorecard/{model}/vs_study.md"),
            caption="../report/scorecard.rst",
            category="Scorecard",
            subcategory="{model}",
            labels={"task": "all", "output": "scorecard vs full study"},
        ),
    log:
        study_path("logs/scorecard/{model}/vs_study.log"),
    localrule: True
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        tasks=TASKS,
        study_costs=lambda wc: {
            t: [study_path(f"logs/train_adapter/{wc.model}/{t}/{c}.benchmark.tsv") for c in study_trained(t)]
            + [study_path(f"logs/evaluate_task/{wc.model}/{t}.benchmark.tsv")]
            for t in TASKS
        },
        goal=SCORECARD["cost_goal"],
        seed=STUDY["seed"],
    script:
        "../workflow/scripts/scorecard_vs_study.py"


# Named targets: `snakemake scorecard` (every model and task; runs before the full study),
# `snakemake scorecard_vs_study` (the scorecard against Table 1; builds the study too).
rule scorecard:
    input:
        [f for m in MODELS for f in scorecard_targets(m)],


rule scorecard_vs_study:
    input:
        [f for m in MODELS for f in scorecard_vs_study_targets(m)],
