"""When2Call data: loading and validation (when2call.py), prompt formats (formats.py), training and
evaluation examples (prepare.py) with the tokenized-data cache (cache.py), the bundled samples made by
make_sample.py (When2Call-shaped) and make_chat_sample.py (conversational, sample/chat/), both written by
sample_files.py, and `python -m fcft.data show` (__main__.py) to look at a row as trained on and scored."""

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent / "sample"
TEMPLATE_DIR = Path(__file__).parent / "templates"  # chat templates fcft ships (model.chat_template)
