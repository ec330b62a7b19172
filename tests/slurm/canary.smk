# A two-job workflow that checks the local Slurm cluster and profiles/slurm-local on their own,
# independent of the study's rules: a CPU job, then a job named like a GPU rule of the study
# (train_adapter) so that the profile's set-resources give it `gpu: 1, gpu_model: fake`.
# Used by tests/test_slurm.py; each job records what Slurm gave it.


rule all:
    input:
        "canary/gpu.txt",


rule cpu_step:
    output:
        "canary/cpu.txt",
    log:
        "canary/cpu.log",
    shell:
        "echo \"job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}}\" > {output} 2> {log}"


rule train_adapter:
    input:
        "canary/cpu.txt",
    output:
        "canary/gpu.txt",
    log:
        "canary/gpu.log",
    shell:
        "echo \"job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}}\" > {output} 2> {log}"
