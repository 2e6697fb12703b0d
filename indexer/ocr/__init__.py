"""The text in the pictures (`[ocr]`): RapidOCR's PP-OCRv6 models, shipped in its wheel, run by onnxruntime.

- `engine`: one image read in the OCR worker process (`read_text`): a cheap look for text on a small copy
  first, then detection and recognition of the lines found on a copy at `max_side`;
- `stage`: the thread in the indexing process that takes the next indexed image whose text is unread, has the
  worker read it, writes the text into the sidecar (`pixdex:Text`) and hands it to the writer (`text_read`).
"""
