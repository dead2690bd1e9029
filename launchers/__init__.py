"""Where a run trains. fcft/ never imports this package: the CLI reaches a launcher through the config
(fcft/runs/launch.py), so a user can add one (Slurm, Ray) without touching fcft/.

A launcher is the class `conf/launcher/*.yaml`'s `_target_` names; the file's other keys are its constructor's
keyword arguments, checked against its signature. It follows fcft/runs/launch.py's `Launcher` protocol (check,
launch), and `RemoteLauncher` (submit, status, collect, poll_s) when its runs execute elsewhere: a multirun then
submits every job, waits for them and collects them (fcft/runs/sweep.py), as `python -m fcft.runs DIR` does later.

    local.py            this machine: in-process, or `accelerate launch` for several processes
    processes.py        the worker's command line for a strategy (none, ddp, zero3) and machine count
    configs/            accelerate configs: ddp.yaml, deepspeed_zero3.yaml (the published recipe's)
    sagemaker.py        SageMaker training jobs through the SDK v3 ModelTrainer: the launcher
    sagemaker_job.py    what such a job gets (source, spec, channels, environment) and gives back
    aws.py              sessions, clients, the training image, quiet SDK logging, AWS's refusals as errors
    sagemaker_entry.py  what such a job runs: install fcft, accelerate launch the worker, publish outputs
"""
