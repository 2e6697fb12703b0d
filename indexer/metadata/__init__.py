"""A person's metadata: what an image's own bytes and its sidecar say about it, reconciled.

- `reconcile`: the Metadata Working Group's rules across XMP, IPTC and EXIF (`Embedded`), and pyexiv2's
  forms of values (`as_list`, `lang_alt`);
- `image`: an image's own XMP, IPTC and EXIF, read with exiv2 and decoded by charset;
- `photoshop`: the IPTC digest in the Photoshop image resources (is XMP in sync with IPTC?);
- `gps`: positions from EXIF and XMP;
- `effective`: what an image is indexed with — its sidecar's keywords and text, else its own.
"""
