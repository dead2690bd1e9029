"""Training: the method registry and one module per method (methods/: sft; preference = dpo + mpo; ...), which
parameters train (tuning.py; spectrum.py with its file format, spectrum_yaml.py), and the trainer arguments
every method shares (args.py)."""
