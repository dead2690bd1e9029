"""Run the worker in this process, on this machine."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


class LocalLauncher:
    def launch(self, spec: DictConfig, run_dir: Path) -> dict:
        from fcft import worker

        return worker.run(spec, run_dir)
