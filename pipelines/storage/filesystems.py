"""Which `pyarrow.fs` filesystem serves a URI scheme, configured by the standard environment
(AWS_* variables, AWS_ENDPOINT_URL for S3-compatible servers, GOOGLE_APPLICATION_CREDENTIALS)
and by `--storage-option k=v`.

The options travel to worker processes in one environment variable, so a part task on any
node builds the same filesystem from a URI alone (Ray's workers inherit the driver's
environment; a cluster gets it through the job's runtime environment)."""
from __future__ import annotations

import functools
import json
import os
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from fusionweave.pipelines.errors import BuildSetupError

ENV = "FUSIONWEAVE_STORAGE_OPTIONS"
RETRIES = 5  # attempts per request on S3 (pyarrow's standard retry strategy) and boto3 alike

S3_OPTIONS = {"endpoint_override", "scheme", "region", "access_key", "secret_key", "session_token", "anonymous",
              "connect_timeout", "request_timeout", "force_virtual_addressing", "retries"}
GCS_OPTIONS = {"endpoint_override", "scheme", "anonymous", "project_id", "retry_time_limit_s"}
NATIVE = {"s3": S3_OPTIONS, "gs": GCS_OPTIONS, "gcs": GCS_OPTIONS}
SECRETS = ("access_key", "secret_key", "session_token", "access_token")


class StorageConfigError(BuildSetupError):
    pass


def parse_options(pairs: list[str]) -> dict[str, str]:
    """`k=v` strings (`--storage-option`) -> a dict. A key may name its store (`s3.region=...`);
    a plain key must be an option of S3 or GCS, so a typo is refused, not ignored."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StorageConfigError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        scheme, dot, name = key.rpartition(".")
        known = NATIVE.get(scheme, set()) if dot and scheme in NATIVE else S3_OPTIONS | GCS_OPTIONS
        if (not dot or scheme in NATIVE) and name not in known:
            raise StorageConfigError(f"--storage-option {key}: not a storage option; known: {', '.join(sorted(known))}"
                                     " (or SCHEME.KEY for an fsspec store)")
        out[key] = value
    return out


def redacted(argv: list[str]) -> list[str]:
    """A command line as it may be recorded (build.json, the lease): secret option values hidden."""
    out, after_flag = [], False
    for a in argv:
        flag, eq, inline = a.partition("=")
        value = a if after_flag else (inline if flag == "--storage-option" and eq else None)
        if value is not None and value.partition("=")[0].rpartition(".")[2] in SECRETS:
            a = a[:len(a) - len(value)] + value.partition("=")[0] + "=***"
        out.append(a)
        after_flag = a == "--storage-option"
    return out


def configure(options: dict[str, str]) -> None:
    """Set the options of this process and of every worker it starts."""
    if options:
        os.environ[ENV] = json.dumps({**current(), **options}, sort_keys=True)


def current() -> dict[str, str]:
    try:
        return json.loads(os.environ.get(ENV) or "{}")
    except ValueError:
        raise StorageConfigError(f"${ENV} is not a JSON object of storage options") from None


def options_for(scheme: str, options: dict[str, str] | None = None) -> dict[str, str]:
    """The options that apply to `scheme`: its own (`s3.x`), then plain ones it knows."""
    opts = current() if options is None else options
    known = NATIVE.get(scheme)
    plain = {k: v for k, v in opts.items() if "." not in k and (known is None or k in known)} if known else {}
    own = {k.split(".", 1)[1]: v for k, v in opts.items() if k.startswith(scheme + ".")}
    return {**plain, **own}


def _value(v: str) -> Any:
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def s3_settings(opts: dict[str, str]) -> dict[str, Any]:
    """S3 settings from the options, then AWS_ENDPOINT_URL(_S3) (which pyarrow does not read)."""
    s = {k: _value(v) if k not in ("access_key", "secret_key", "session_token", "region") else v
         for k, v in opts.items()}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_override" not in s:
        u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        s["endpoint_override"] = u.netloc
        s.setdefault("scheme", u.scheme)
    if "region" not in s and (region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        s["region"] = region
    if "endpoint_override" in s:
        s.setdefault("region", "us-east-1")  # an S3-compatible server: no region lookup
    return s


def endpoint_of(scheme: str) -> str | None:
    """The server a store talks to, for messages."""
    if scheme == "s3":
        s = s3_settings(options_for("s3"))
        return f"{s.get('scheme', 'https')}://{s['endpoint_override']}" if "endpoint_override" in s else None
    return options_for(scheme).get("endpoint_override")


def _env_key() -> tuple[str | None, ...]:
    """The environment a cached filesystem was built from: a change builds a new one."""
    return tuple(os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                                             "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"))


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, opts_json: str, env_key: tuple[str | None, ...]) -> Any:
    import pyarrow.fs as pafs

    opts = json.loads(opts_json)
    if scheme == "s3":
        s = s3_settings(opts)
        retries = int(s.pop("retries", RETRIES))
        return pafs.S3FileSystem(**s, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=retries))
    if scheme in ("gs", "gcs"):
        g = {k: _value(v) for k, v in opts.items()}
        if "retry_time_limit_s" in g:
            g["retry_time_limit"] = timedelta(seconds=float(g.pop("retry_time_limit_s")))
        return pafs.GcsFileSystem(**g)
    try:
        import fsspec

        fs = fsspec.filesystem(scheme, **{k: _value(v) for k, v in opts.items()})
    except (ImportError, ValueError) as err:
        raise StorageConfigError(f"no filesystem for {scheme}:// URIs ({err}); install the fsspec package "
                                 f"that provides it") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def filesystem(scheme: str) -> Any:
    """The pyarrow filesystem for `scheme`, built once per process and set of options."""
    try:
        return _filesystem(scheme, json.dumps(options_for(scheme), sort_keys=True), _env_key())
    except TypeError as err:  # an option the filesystem does not take, or of the wrong type
        raise StorageConfigError(f"storage options for {scheme}:// are not valid: {err}") from None


@functools.lru_cache(maxsize=4)
def _s3_client(opts_json: str, env_key: tuple[str | None, ...]) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    s = s3_settings(json.loads(opts_json))
    endpoint = f"{s.get('scheme', 'https')}://{s['endpoint_override']}" if "endpoint_override" in s else None
    cfg = Config(retries={"max_attempts": int(s.get("retries", RETRIES)), "mode": "standard"},
                 connect_timeout=float(s.get("connect_timeout", 10)), read_timeout=float(s.get("request_timeout", 60)),
                 s3={"addressing_style": "virtual" if s.get("force_virtual_addressing") else "auto"},
                 **({"signature_version": UNSIGNED} if s.get("anonymous") else {}))
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=s.get("region"), aws_access_key_id=s.get("access_key"),
        aws_secret_access_key=s.get("secret_key"), aws_session_token=s.get("session_token"), config=cfg)


def s3_client() -> Any:
    """A boto3 client configured as the pyarrow S3 filesystem: for what pyarrow cannot do (a
    conditional create, an upload that is aborted rather than completed when it fails)."""
    return _s3_client(json.dumps(options_for("s3"), sort_keys=True), _env_key())
