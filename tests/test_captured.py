"""Library chatter (Python warnings, C code writing to stdout/stderr) is captured per file, never
printed raw: it goes with the file's name to the log, or into its failure reason."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from pixdex.indexer.captured import Captured
from pixdex.indexer.errors import ReadError
from pixdex.indexer.prepare import DecodeSpec, prepare
from pixdex.indexer.preprocess import ClipTransform


def test_warnings_and_c_level_output_are_captured_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    with Captured() as captured:
        warnings.warn("Possibly corrupt EXIF data", UserWarning, stacklevel=1)
        os.write(2, b"TIFFReadDirectory: Warning, unknown field with tag 50000\n")
        os.write(1, b"Warning: Directory Canon has an unexpected next pointer; ignored.\n")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "UserWarning: Possibly corrupt EXIF data" in captured.text
    assert "TIFFReadDirectory" in captured.text and "unexpected next pointer" in captured.text
    os.write(2, b"after\n")  # the real stderr is back
    assert capfd.readouterr().err == "after\n"


def test_a_failing_file_carries_what_the_library_said(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    path = tmp_path / "warns.png"
    Image.new("RGB", (8, 8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:40])  # truncated after the header
    spec = DecodeSpec(32, 10_000_000, ClipTransform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), None)
    with pytest.raises(ReadError) as failed, warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(os.fsencode(path), spec)
    assert "warns.png" in str(failed.value)
    assert capfd.readouterr() == ("", "")
