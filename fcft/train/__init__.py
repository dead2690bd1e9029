"""Training: one module per method (sft, ...), tuning choices in tuning.py, shared trainer arguments in args.py."""
