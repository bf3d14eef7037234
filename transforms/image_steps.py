"""Batch steps over encoded images (column `image`, binary)."""
from __future__ import annotations

import pyarrow as pa

from fusionweave.transforms.image_validate import ImageLimits, validate_image
from fusionweave.transforms.step import Step, reject


class DecodeValidate(Step):
    """Real decode, EXIF orientation, RGB normalisation, size checks and hashes.

    Adds: image (normalised bytes), ext, width, height, source_format, source_mode,
    normalised, sha256, phash. Rows that fail carry a reject reason instead."""

    name = "decode_validate"

    def __init__(self, limits: ImageLimits):
        self.limits = limits

    def process(self, batch: pa.Table) -> pa.Table:
        results = [validate_image(b, self.limits) for b in batch.column("image").to_pylist()]
        cols = {
            "image": pa.array([r.data for r in results], pa.binary()),
            "ext": pa.array([r.ext for r in results], pa.string()),
            "width": pa.array([r.width for r in results], pa.int32()),
            "height": pa.array([r.height for r in results], pa.int32()),
            "source_format": pa.array([r.source_format for r in results], pa.string()),
            "source_mode": pa.array([r.source_mode for r in results], pa.string()),
            "normalised": pa.array([r.normalised for r in results], pa.bool_()),
            "sha256": pa.array([r.sha256 for r in results], pa.string()),
            "phash": pa.array([r.phash for r in results], pa.uint64()),
        }
        for name, col in cols.items():
            if name in batch.column_names:
                batch = batch.set_column(batch.schema.get_field_index(name), name, col)
            else:
                batch = batch.append_column(name, col)
        return reject(batch, self.name, [r.reason for r in results], [r.detail for r in results])
