"""When2Call data: loading and validation (when2call.py), prompt formats (formats.py), training and
evaluation examples (prepare.py), and the bundled sample made by make_sample.py."""

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent / "sample"
