"""What made an image's text (`reader_id`): the OCR package's version, its models and the settings a reading
depends on. Light on purpose: the serving process names the reader to count progress (`pixdex status`)."""

from __future__ import annotations

from importlib.metadata import version

from pixdex.indexer.sections import OcrSettings

MODELS = "PP-OCRv6-small"


def reader_id(settings: OcrSettings) -> str:
    """A different one reads every image again."""
    return (f"rapidocr-{version('rapidocr')}/{MODELS}@{settings.max_side}/{settings.min_confidence:g}/"
            f"{settings.gate_side}/{settings.max_lines}/det{min(settings.detect_side, settings.max_side)}/vote"
            + (f"/clip{settings.clip_gate:g}" if settings.clip_gate else ""))
