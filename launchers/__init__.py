"""Where a run trains. A launcher is any class named by `conf/launcher/*.yaml`'s `_target_`; its other
keys are its constructor's keyword arguments. `launch(spec, run_dir)` starts the run whose spec.yaml
already lies in run_dir, and returns its metrics when it finished in place (None when it was only
submitted). fcft/ never imports this package: the CLI reaches it through the config.
"""
