"""Talking to AWS for the SageMaker launcher: sessions and clients, the training image, the SDK's logging kept
quiet, AWS's refusals turned into one-line errors, and the planning session a dry run builds its request with.
boto3 and the SageMaker SDK are imported inside the functions that need them (the SDK takes ~2 s to import).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
from pathlib import Path
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
    "sagemaker.core.helper.iam_role_resolver": logging.WARNING,
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
    """boto3 clients by region and service, made once (a sweep's status table asks every few seconds); `drop`
    forgets one, so that the next `get` re-reads the credentials (refreshed after an expired token)."""

    def __init__(self):
        self._made: dict = {}

    def get(self, region: str, service: str = "sagemaker"):
        if (region, service) not in self._made:
            with sdk_logging():
                self._made[region, service] = boto_session(region).client(service)
        return self._made[region, service]

    def drop(self, region: str, service: str = "sagemaker") -> None:
        self._made.pop((region, service), None)


# AWS error codes that say "not now" rather than "no": throttling, expired or not-yet-refreshed credentials,
# AWS's own hiccups. A call that fails with one of them is tried again, never taken for the job's failure.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def error_code(err: BaseException) -> Optional[str]:
    """The AWS error code of a botocore ClientError, else None."""
    return (getattr(err, "response", None) or {}).get("Error", {}).get("Code")


def transient(err: BaseException) -> bool:
    """Whether `err` is worth trying again: a transient AWS error code, or the network failing on the way."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return error_code(err) in TRANSIENT_CODES or isinstance(err, (BotoConnectionError, HTTPClientError))


def backoff(attempt: int, cap: float) -> float:
    """Seconds to wait before try `attempt` (1, 2, ...): exponential with full jitter, at most `cap`."""
    return random.uniform(0, min(cap, 0.5 * 2**attempt))


def validate_request(request: dict, operation: str = "CreateTrainingJob") -> None:
    """SpecError unless `request` is valid against SageMaker's own API model, as botocore ships it: botocore's
    client-side validation (required members, types, minimums), plus the maximum lengths and patterns of the
    model's strings and maps, which botocore leaves to the service (an environment value over 512 characters)."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("sagemaker").operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _limits(shape, request, operation)
    if problems:
        raise SpecError(f"launcher: the {operation} request is not valid for SageMaker's API: {'; '.join(problems)}")


def _limits(shape, value, path: str) -> list[str]:
    """The model's `max` and `pattern` constraints that `value` breaks, each named by its path in the request."""
    import re

    found = []
    limit = shape.metadata.get("max")
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in value.items():
            if name in shape.members:
                found += _limits(shape.members[name], member, f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        if limit is not None and len(value) > limit:
            found.append(f"{path}: {len(value)} items, at most {limit}")
        for i, item in enumerate(value):
            found += _limits(shape.member, item, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        if limit is not None and len(value) > limit:
            found.append(f"{path}: {len(value)} entries, at most {limit}")
        for key, item in value.items():
            found += _limits(shape.key, key, f"{path} key {key!r}")
            found += _limits(shape.value, item, f"{path}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        if limit is not None and len(value) > limit:
            found.append(f"{path}: {len(value)} characters, at most {limit}")
        pattern = shape.metadata.get("pattern")
        try:
            if pattern and not re.fullmatch(pattern, value):
                found.append(f"{path}: {value[:60]!r} does not match {pattern}")
        except re.error:  # a Java-only regex construct: left to the service
            pass
    return found


def upload_once(s3, bucket: str, prefix: str, path: Path) -> str:
    """The S3 URI of a local file or directory under <prefix>/inputs/<content hash>/, uploaded only when that
    content isn't there yet: every job of a sweep reads one copy. `s3` None: only say where (a dry run)."""
    base = f"{prefix}/inputs/{content_hash(path)}/{path.name}"
    if path.is_file():
        if s3 is not None and not _exists(s3, bucket, base):
            s3.upload_file(str(path), bucket, base)
        return f"s3://{bucket}/{base}"
    marker = f"{base}.complete"  # written last: a directory cut off mid-upload is uploaded again
    if s3 is not None and not _exists(s3, bucket, marker):
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            s3.upload_file(str(file), bucket, f"{base}/{file.relative_to(path).as_posix()}")
        s3.put_object(Bucket=bucket, Key=marker, Body=b"")
    return f"s3://{bucket}/{base}/"


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (relative paths and bytes), 16 hex digits."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if file != path else b"")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception as err:
        if error_code(err) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


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
def offline_role_check():
    """The SDK checks the execution role against IAM while building a request (iam:SimulatePrincipalPolicy and the
    role's trust policy): a dry run skips that, so that it needs no network and no credentials."""
    previous = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SAGEMAKER_VALIDATE_ROLE", None)
        else:
            os.environ["SAGEMAKER_VALIDATE_ROLE"] = previous


@contextlib.contextmanager
def aws_refusals(doing: str):
    """Errors from AWS or the SDK (no credentials, access denied, a quota, an unknown role) end the run
    with their message, not a traceback through the SDK."""
    try:
        yield
    except Exception as err:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            raise jobs.RunFailed(f"couldn't {doing} on SageMaker: {NO_CREDENTIALS}") from err
        if error_code(err) in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            raise jobs.RunFailed(
                f"couldn't {doing} on SageMaker: your AWS credentials have expired: {REFRESH}"
            ) from err
        from_aws = isinstance(err, ValueError) or type(err).__module__.split(".")[0] in (
            "botocore",
            "boto3",
            "sagemaker",
        )
        if isinstance(err, SpecError) or not from_aws:
            raise
        raise jobs.RunFailed(f"couldn't {doing} on SageMaker: {type(err).__name__}: {err}") from err


NO_CREDENTIALS = (
    "no AWS credentials were found: run `aws configure`, or `aws sso login` with AWS_PROFILE set, or export "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); launcher.dry_run=true needs none"
)
REFRESH = "refresh them (`aws sso login`, or new AWS_SESSION_TOKEN values) and run again"


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)
