"""The text in the pictures (`[ocr]`): RapidOCR's PP-OCRv6 models, shipped in its wheel, run by onnxruntime.

- `engine`: one image read in the OCR worker process (`read_text`): a cheap look for text on a small copy
  first, then detection (on a photo, at `detect_side`) and recognition of the lines found, turned the way the
  direction classifier's vote says, on a copy at `max_side`;
- `gate`: the optional CLIP gate (`[ocr] clip_gate`): an image far from "text, document, screenshot, sign" is
  not read;
- `stage`: the thread in the indexing process that takes the next indexed image whose text is unread, has the
  worker read it, writes the text into the sidecar (`pixdex:Text`) and hands it to the writer (`text_read`).
"""
