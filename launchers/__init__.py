"""Where a run trains. fcft/ never imports this package: the CLI reaches a launcher through the config
(fcft/runs/launch.py), so a user can add one (Slurm, Ray) without touching fcft/.

A launcher is any class named by `conf/launcher/*.yaml`'s `_target_`; the file's other keys are its
constructor's keyword arguments (checked against its signature). The protocol:

    check(spec)               optional. Raise fcft.spec.SpecError("key: what is wrong; what is valid") for a
                              spec this launcher can't run (e.g. a SageMaker instance type on launcher=local).
                              Called before anything is written.
    launch(spec, run_dir)     run the spec whose spec.yaml already lies in run_dir. Return its metrics when it
                              finished here (metrics.json is in run_dir), or None when it was only submitted
                              (or, for a dry run, not even that). Raise fcft.jobs.RunFailed when it failed.

Launchers that run elsewhere (SageMaker) also have:

    submit(spec, run_dir)     start the run without waiting and write run_dir/job.json (fcft/runs/jobs.py): the
                              multirun calls this instead of `launch`, so a sweep's jobs all go out at once.
    status(run_dir)           the job's fcft.jobs.JobStatus (state, done, failed, detail, reason).
    collect(run_dir)          bring a completed job's outputs into run_dir; return its metrics (or None).
    poll_s                    seconds between status calls while waiting.

A launcher that submits is re-made from each job's spec.yaml at the multirun's end (fcft/runs/sweep.py), which
waits with a live status table, collects, and reports; `python -m fcft.runs DIR` does the same later.

    local.py            this machine: in-process, or `accelerate launch` for several processes
    processes.py        the worker's command line for a strategy (none, ddp, zero3) and machine count
    configs/            accelerate configs: ddp.yaml, deepspeed_zero3.yaml (the published recipe's)
    sagemaker.py        SageMaker training jobs through the SDK v3 ModelTrainer
    sagemaker_entry.py  what such a job runs: install fcft, accelerate launch the worker, publish outputs
"""
