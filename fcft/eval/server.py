"""An OpenAI-compatible server on a run's saved model, started on 127.0.0.1 and stopped with it.

    with Server(RUN_DIR / "model") as endpoint:          # engine="auto": vLLM where it can run, else transformers
        answers = openai_client.answer_all(endpoint, requests)

Two engines, each the field's own server (fcft writes none):

    transformers  `transformers serve MODEL` (transformers >= 5, `pip install 'fcft[serve]'` for its FastAPI,
                  uvicorn and openai): renders the conversation with the model's chat template and parses tool
                  calls with transformers' response template for the model type (Qwen's `<tool_call>` JSON).
                  Runs on CPU. One request at a time, so concurrency only queues.
    vllm          `python -m vllm.entrypoints.openai.api_server` with `--enable-auto-tool-choice` and a tool-call
                  parser (`hermes` for Qwen's `<tool_call>`, `llama3_json` for Llama). Only where vllm imports and
                  CUDA is present; asked for elsewhere, it is refused with the reason.

The server gets a free port on 127.0.0.1, its own process group (so that its workers go with it), and its output
in a log file. `Server` waits until the server answers /health and lists the model (bounded by
`startup_timeout`; a server that exits first is reported with its log's tail). Leaving the `with` block, on
success or error, stops the whole process group: SIGTERM, then SIGKILL after `stop_timeout`.
A server the user runs elsewhere needs none of this: `openai_client.Endpoint(url, model, api_key_env)`.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from fcft.eval.openai_client import Endpoint

ENGINES = ("auto", "transformers", "vllm")
HOST = "127.0.0.1"
VLLM_TOOL_PARSERS = {"qwen": "hermes", "llama": "llama3_json"}  # fcft's chat family -> vLLM's parser for its calls


class ServerError(RuntimeError):
    """A server that can't start here, didn't come up, or died; the message says why (with its log's tail)."""


def vllm_refusal() -> Optional[str]:
    """Why vLLM can't serve here (None when it can)."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install vllm, on a machine with a CUDA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "vllm needs a CUDA GPU and torch sees none here"
    return None


def transformers_refusal() -> Optional[str]:
    """Why `transformers serve` can't run here (None when it can)."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        return "`transformers serve` needs fastapi, uvicorn, pydantic and openai: pip install 'fcft[serve]'"
    return None


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Server:
    """A server process on `model_dir` (module doc); a context manager giving its Endpoint."""

    def __init__(
        self,
        model_dir: str | Path,
        engine: str = "auto",
        family: str = "qwen",
        startup_timeout: float = 300.0,
        stop_timeout: float = 15.0,
        log_path: Optional[str | Path] = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.model_dir = Path(model_dir).resolve()
        if not (self.model_dir / "config.json").is_file():
            raise ServerError(f"{self.model_dir} holds no saved model (no config.json): give a run's model/ folder")
        if engine not in ENGINES:
            raise ServerError(f"unknown server engine '{engine}'; valid: {', '.join(ENGINES)}")
        if engine == "auto":
            engine = "vllm" if vllm_refusal() is None else "transformers"
        refusal = vllm_refusal() if engine == "vllm" else transformers_refusal()
        if refusal:
            raise ServerError(f"can't serve {self.model_dir} with {engine}: {refusal}")
        self.engine, self.family = engine, family
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix=f"fcft-{engine}-", suffix=".log")[1])
        )
        self.extra_args = tuple(extra_args)
        self.port: Optional[int] = None
        self.process: Optional[subprocess.Popen] = None

    @property
    def endpoint(self) -> Endpoint:
        # transformers serve answers for its pinned model under the name it was started with; vLLM as told.
        return Endpoint(f"http://{HOST}:{self.port}/v1", str(self.model_dir), api_key_env="FCFT_SERVER_API_KEY")

    def command(self) -> list[str]:
        model, port = str(self.model_dir), str(self.port)
        if self.engine == "transformers":
            launcher = "from transformers.cli.transformers import main; import sys; sys.exit(main())"
            args = ["serve", model, "--host", HOST, "--port", port, "--device", "auto", "--dtype", "auto"]
            return [sys.executable, "-c", launcher, *args, *self.extra_args]
        parser = VLLM_TOOL_PARSERS.get(self.family, "hermes")
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--served-model-name", model, "--host", HOST, "--port", port,
            "--enable-auto-tool-choice", "--tool-call-parser", parser, *self.extra_args,
        ]  # fmt: skip

    # --- lifecycle ------------------------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process (returns at once; `wait_ready` waits for it)."""
        if self.process is not None:
            raise ServerError("this server is already started")
        self.port = free_port()
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip

    def wait_ready(self) -> Endpoint:
        """The endpoint, once /health answers 200 and /v1/models lists the model; ServerError otherwise."""
        assert self.process is not None, "launch() first"
        deadline, base = time.monotonic() + self.startup_timeout, f"http://{HOST}:{self.port}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"the {self.engine} server on {self.model_dir} exited with status {self.process.returncode} "
                    f"before it answered (log {self.log_path}):\n{self.log_tail()}"
                )
            if _ok(f"{base}/health") and str(self.model_dir) in (_get(f"{base}/v1/models") or ""):
                return self.endpoint
            time.sleep(0.25)
        raise ServerError(
            f"the {self.engine} server on {self.model_dir} didn't answer on {base}/health within "
            f"{self.startup_timeout:.0f} s (log {self.log_path}):\n{self.log_tail()}"
        )

    def stop(self) -> Optional[int]:
        """Stop the server and every process of its group; its exit status (None if it was never started)."""
        process, self.process = self.process, None
        if process is None:
            return None
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass  # the whole group is gone already
            try:
                process.wait(timeout=wait)
                _reap_group(process.pid, wait)
                break
            except subprocess.TimeoutExpired:
                continue
        return process.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Endpoint:
        try:
            if self.process is None:
                self.launch()
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _reap_group(pgid: int, timeout: float) -> None:
    """Wait until no process of the group is left (a worker the server started may outlive it by a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise subprocess.TimeoutExpired(f"process group {pgid}", timeout)


def _get(url: str, timeout: float = 2.0) -> Optional[str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read().decode(errors="replace") if reply.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _ok(url: str) -> bool:
    return _get(url) is not None
