"""The SageMaker launcher's settings, checked when it is built: every launcher.* value SageMaker would refuse (or a
job would fail on) is refused here, naming its key, before anything is uploaded or billed."""

from __future__ import annotations

import re

from fcft import rundir
from fcft.spec import SpecError
from launchers.sagemaker_job import MASKED_WORDS

# GPUs per instance of the SageMaker instance types fcft's presets and their neighbours use (AWS's instance pages);
# a type not listed is not checked.
GPUS = {
    **{f"ml.g5.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g5.12xlarge": 4,
    "ml.g5.24xlarge": 4,
    "ml.g5.48xlarge": 8,
    **{f"ml.g6.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g6.12xlarge": 4,
    "ml.g6.24xlarge": 4,
    "ml.g6.48xlarge": 8,
    **{f"ml.g4dn.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g4dn.12xlarge": 4,
    "ml.p3.2xlarge": 1,
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8,
    "ml.p5.48xlarge": 8,
    "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8,
}
FETCH = ("all", "metrics", "none")  # which archive collect() fetches: model.tar.gz, output.tar.gz, or neither
MAX_RUNTIME_S = 28 * 24 * 3600  # SageMaker's limit for a training job


def _check_instance(launcher) -> None:
    """The job's machines, disk, time limits and spot capacity (set by the compute=ml.* presets)."""
    if launcher.instance_type is not None and not re.fullmatch(r"ml\.[a-z0-9-]+\.[a-z0-9-]+", launcher.instance_type):
        raise SpecError(
            f"launcher.instance_type: '{launcher.instance_type}' is not a SageMaker instance type (like ml.g5.2xlarge)"
        )
    for key in ("instance_count", "volume_size_gb"):
        if getattr(launcher, key) < 1:
            raise SpecError(f"launcher.{key}: must be >= 1, got {getattr(launcher, key)}")
    if not 1 <= launcher.max_runtime_s <= MAX_RUNTIME_S:
        raise SpecError(
            f"launcher.max_runtime_s: must be in [1, {MAX_RUNTIME_S}] (28 days), got {launcher.max_runtime_s}"
        )
    if launcher.use_spot and (launcher.max_wait_s is None or launcher.max_wait_s < launcher.max_runtime_s):
        raise SpecError(
            f"launcher.max_wait_s: spot training needs max_wait_s >= max_runtime_s ({launcher.max_runtime_s}), "
            f"got {launcher.max_wait_s}"
        )
    if not launcher.use_spot and launcher.max_wait_s is not None:
        raise SpecError(
            "launcher.max_wait_s: applies to spot training only: set launcher.use_spot=true or max_wait_s=null"
        )


def check_settings(launcher) -> None:
    """SpecError naming the launcher.* key of a setting SageMaker would refuse, before anything is sent."""
    _check_instance(launcher)
    if launcher.base_job_name is not None and not re.fullmatch(
        r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,39}", launcher.base_job_name
    ):
        raise SpecError(
            f"launcher.base_job_name: '{launcher.base_job_name}' can't start a SageMaker job name: letters, digits "
            "and inner hyphens, at most 40 characters (fcft appends 7 and the SDK a timestamp, within 63)"
        )
    if launcher.max_parallel is not None and launcher.max_parallel < 1:
        raise SpecError(f"launcher.max_parallel: must be >= 1 or null (no limit), got {launcher.max_parallel}")
    if bool(launcher.subnets) != bool(launcher.security_group_ids):
        raise SpecError(
            "launcher.subnets / launcher.security_group_ids: a job in a VPC needs both (subnet-... and sg-... ids)"
        )
    if launcher.fetch not in FETCH:
        raise SpecError(f"launcher.fetch: '{launcher.fetch}' is not one of {', '.join(FETCH)}")
    if not launcher.poll_s > 0:
        raise SpecError(f"launcher.poll_s: must be > 0, got {launcher.poll_s}")
    for name in launcher.environment:
        if any(word in name.upper() for word in MASKED_WORDS):
            raise SpecError(
                f"launcher.environment.{name}: looks like a secret, and launcher settings are "
                f"written to {rundir.SPEC}; export {name} in your shell and list it in launcher.secrets"
            )
    for name in launcher.secrets:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise SpecError(f"launcher.secrets: '{name}' is not an environment variable name")
        if not any(word in name.upper() for word in MASKED_WORDS):
            raise SpecError(
                f"launcher.secrets: '{name}' would be shown in the job's log (the SageMaker "
                f"SDK masks only names holding {', '.join(MASKED_WORDS)}); pass it in "
                "launcher.environment if it is not secret"
            )
