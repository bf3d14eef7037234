"""Typed configuration of the curate pipeline. Unknown fields are errors (extra="forbid")."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fusionweave.pipelines.config_base import WithPlugins

from fusionweave.transforms.metadata_filters import METADATA_FILTERS
from fusionweave.transforms.url_safety import AddressPolicy, canonical_host
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc, StoragePath


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UrlPolicyConfig(Strict):
    # false: refuse private/loopback/link-local; true: allow all of them;
    # a list: allow only these hosts or networks (e.g. ["127.0.0.1"] for a local test server)
    allow_private_networks: bool | list[str] = False

    @field_validator("allow_private_networks")
    @classmethod
    def _ascii_hosts(cls, v: bool | list[str]) -> bool | list[str]:
        """Host names as the download judges them (IDNA's ASCII form); networks as written."""
        if isinstance(v, bool):
            return v
        return [h.lower() if "/" in h or ":" in h else canonical_host(h) for h in v]

    def policy(self) -> AddressPolicy:
        if isinstance(self.allow_private_networks, bool):
            return AddressPolicy(allow_private=self.allow_private_networks)
        return AddressPolicy(allowed=tuple(h.lower() for h in self.allow_private_networks))


class MetadataConfig(WithPlugins):
    input: list[StoragePath] = Field(..., description="LAION parquet files or folders of them")
    rows_per_shard: int = Field(10_000, gt=0)
    min_short_edge: int | None = Field(448, ge=1)
    reject_missing_size: bool = False
    max_aspect_ratio: float | None = Field(None, gt=1.0)
    max_punsafe: float | None = Field(None, ge=0.0, le=1.0)
    max_pwatermark: float | None = Field(None, ge=0.0, le=1.0)
    min_similarity: float | None = Field(None, ge=-1.0, le=1.0, description="image-text cosine similarity floor")
    caption_min_chars: int = Field(1, ge=0)
    caption_max_chars: int = Field(4096, gt=0)
    dedup_urls: bool = True
    dedup_buckets: int = Field(64, gt=0)

    @classmethod
    def plugin_types(cls) -> dict[str, Any]:
        """Fields that filters declare themselves (transforms.metadata_filters.MetadataFilter)."""
        return {name: f.value for name, f in METADATA_FILTERS.items()}

    @model_validator(mode="after")
    def _caption_range(self) -> "MetadataConfig":
        if self.caption_min_chars > self.caption_max_chars:
            raise ValueError(f"caption_min_chars ({self.caption_min_chars}) is above caption_max_chars "
                             f"({self.caption_max_chars}): every row would be rejected")
        return self

    @field_validator("input")
    @classmethod
    def _inputs_exist(cls, v: list[Loc]) -> list[Loc]:
        if not v:
            raise ValueError("at least one input path is required")
        missing = [str(p) for p in v if not store.exists(p)]
        if missing:
            raise ValueError(f"input path does not exist: {', '.join(missing)}")
        return v


class DownloadConfig(Strict):
    thread_count: int = Field(16, gt=0)
    timeout: float = Field(10.0, gt=0)  # per socket step: bounds each gap, not the whole download
    # total seconds per request (connect, redirects, headers, body): a server that drips a byte
    # at a time holds a download slot no longer than this; then the URL is a `timeout` reject
    deadline: float = Field(60.0, gt=0, le=3600)
    retries: int = Field(1, ge=0)
    user_agent_token: str | None = "fusionweave"
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    max_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_redirects: int = Field(5, ge=0)
    task_cpus: float = Field(0.5, gt=0)
    # true: the download is a stage of its own and its shards (the bytes as served) are kept;
    # false: validate downloads and decodes each part in one task and no raw copy is written
    keep_shards: bool = False


class ValidateConfig(Strict):
    min_short_edge: int = Field(448, ge=1)
    max_aspect_ratio: float | None = Field(None, gt=1.0)
    max_pixels: int = Field(89_478_485, gt=0)
    max_bytes: int = Field(50 * 1024 * 1024, gt=0)
    jpeg_quality: int = Field(95, ge=1, le=100)
    output_format: Literal["jpg", "png", "original"] = "jpg"
    dedup_sha256: bool = True
    near_dup: bool = True
    phash_hamming_threshold: int = Field(4, ge=0, le=16)
    dedup_buckets: int = Field(64, gt=0)
    task_cpus: float = Field(0.5, gt=0)


class CurateConfig(Strict):
    metadata: MetadataConfig
    url_policy: UrlPolicyConfig = UrlPolicyConfig()
    download: DownloadConfig = DownloadConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
