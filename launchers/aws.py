"""Talking to AWS for the SageMaker launcher: sessions and clients, the training image, the SDK's logging kept
quiet, AWS's refusals turned into one-line errors, and the planning session a dry run builds its request with.
boto3 and the SageMaker SDK are imported inside the functions that need them (the SDK takes ~2 s to import).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Optional

from fcft.runs import jobs
from fcft.spec import SpecError

# Loggers quieted while fcft talks to AWS: botocore logs whole requests (the job's environment included)
# at DEBUG, the SDK its request at DEBUG; their INFO lines (credentials found, config files) are noise here.
QUIET_LOGGERS = {
    "botocore": logging.WARNING,
    "boto3": logging.WARNING,
    "urllib3": logging.WARNING,
    "sagemaker.config": logging.WARNING,
    "sagemaker": logging.INFO,
    "sagemaker.core.utils.utils": logging.INFO,
}


def boto_session(region: Optional[str] = None):
    import boto3

    return boto3.Session(region_name=region)


def region_of(session) -> str:
    """The boto session's region; SpecError naming launcher.region when there is none."""
    if not session.region_name:
        raise SpecError(
            "launcher.region: no AWS region: set launcher.region (e.g. us-east-1), AWS_REGION or "
            "AWS_DEFAULT_REGION, or `region` in ~/.aws/config"
        )
    return session.region_name


def sagemaker_session(region: Optional[str], bucket: Optional[str]):
    """The SDK's Session; `bucket` None: its default bucket, sagemaker-<region>-<account>."""
    from sagemaker.core.helper.session_helper import Session

    with sdk_logging(), aws_refusals("open a SageMaker session"):
        return Session(boto_session=boto_session(region), default_bucket=bucket)


def planning_session(region: Optional[str], bucket: Optional[str]):
    """A SageMaker Session that says where uploads would go and uploads nothing (for launcher.dry_run)."""
    from sagemaker.core.helper.session_helper import Session

    class PlanningSession(Session):
        def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
            uri = f"s3://{bucket or self.default_bucket()}/{key_prefix}"
            return f"{uri}/{os.path.basename(path)}" if os.path.isfile(path) else uri

        def default_bucket(self):
            return self._default_bucket_name_override or f"sagemaker-{self.boto_region_name}-<account id>"

    return PlanningSession(boto_session=boto_session(region), default_bucket=bucket)


class Clients:
    """boto3 clients by region and service, made once (a sweep's status table asks every few seconds)."""

    def __init__(self):
        self._made: dict = {}

    def get(self, region: str, service: str = "sagemaker"):
        if (region, service) not in self._made:
            with sdk_logging():
                self._made[region, service] = boto_session(region).client(service)
        return self._made[region, service]


def pytorch_image(region: str, instance_type: str, framework_version: str, py_version: str) -> str:
    """The PyTorch training DLC's URI for this version and instance type (the published recipe's image)."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(
            framework="pytorch",
            region=region,
            version=framework_version,
            py_version=py_version,
            image_scope="training",
            instance_type=instance_type,
        )
    except ValueError as err:
        raise SpecError(
            f"launcher.image_uri: the SageMaker SDK knows no PyTorch {framework_version} {py_version} training "
            f"image in {region} ({err}); set launcher.image_uri to an ECR image URI, or launcher.framework_version "
            "/ launcher.py_version"
        ) from None


@contextlib.contextmanager
def sdk_logging():
    """While fcft talks to AWS: QUIET_LOGGERS at their levels or above, and without the SDK's warning that
    hyperparameters don't reach a `command` (fcft's are for the console; the job reads its spec file)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    moot = _DropMessage("Hyperparameters are set but are not passed")
    for logger, least in zip(loggers, QUIET_LOGGERS.values()):
        logger.setLevel(max(logger.getEffectiveLevel(), least))
        logger.addFilter(moot)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
            logger.removeFilter(moot)


@contextlib.contextmanager
def aws_refusals(doing: str):
    """Errors from AWS or the SDK (no credentials, access denied, a quota, an unknown role) end the run
    with their message, not a traceback through the SDK."""
    try:
        yield
    except Exception as err:
        from_aws = isinstance(err, ValueError) or type(err).__module__.split(".")[0] in (
            "botocore",
            "boto3",
            "sagemaker",
        )
        if isinstance(err, SpecError) or not from_aws:
            raise
        raise jobs.RunFailed(f"couldn't {doing} on SageMaker: {type(err).__name__}: {err}") from err


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)
