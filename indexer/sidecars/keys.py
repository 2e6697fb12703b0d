"""The XMP properties pixdex reads and writes in sidecars: their pyexiv2 keys and RDF predicates.

pyexiv2 names a property ``Xmp.<prefix>.<Name>`` with exiv2's prefix for the namespace; the RDF graph
(`graph`) and the RDF/XML editor (`rdf`) name it by namespace URI. `NAMESPACES` maps one to
the other, so every path that reads or writes a sidecar speaks of the same properties.
"""

from __future__ import annotations

PIXDEX_NS = "https://pixdex.dev/ns/1.0/"
SEED_PACKET = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
               '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
               'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
               '<?xpacket end="w"?>').encode()

# exiv2's prefix (in pyexiv2 keys) → (namespace URI, the prefix a new XML declaration uses)
NAMESPACES = {
    "dc": ("http://purl.org/dc/elements/1.1/", "dc"),
    "xmp": ("http://ns.adobe.com/xap/1.0/", "xmp"),
    "lr": ("http://ns.adobe.com/lightroom/1.0/", "lr"),
    "digiKam": ("http://www.digikam.org/ns/1.0/", "digiKam"),
    "MicrosoftPhoto": ("http://ns.microsoft.com/photo/1.0/", "MicrosoftPhoto"),
    "photoshop": ("http://ns.adobe.com/photoshop/1.0/", "photoshop"),
    "iptc": ("http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/", "Iptc4xmpCore"),
    "exif": ("http://ns.adobe.com/exif/1.0/", "exif"),
    "pixdex": (PIXDEX_NS, "pixdex"),
}

SUBJECT, HIERARCHICAL, TAGS_LIST = "Xmp.dc.subject", "Xmp.lr.hierarchicalSubject", "Xmp.digiKam.TagsList"
LAST_KEYWORDS, DESCRIPTION, METADATA_DATE = "Xmp.MicrosoftPhoto.LastKeywordXMP", "Xmp.dc.description", \
    "Xmp.xmp.MetadataDate"
TITLE, CREATOR, RATING = "Xmp.dc.title", "Xmp.dc.creator", "Xmp.xmp.Rating"
LABEL = "Xmp.xmp.Label"  # a colour label as Lightroom, darktable and digiKam write it (Red, Yellow, Green…)
LABELS = ("Red", "Yellow", "Green", "Blue", "Purple")  # Lightroom's, darktable's and digiKam's colour labels
OURS, MACHINE, REJECTED = "Xmp.pixdex.Tags", "Xmp.pixdex.Machine", "Xmp.pixdex.Rejected"
PERSON = "Xmp.pixdex.Person"  # the person's keyword paths as pixdex last wrote them to all three fields
DESCRIBED, MODEL = "Xmp.pixdex.Description", "Xmp.pixdex.Model"
TEXT = "Xmp.pixdex.Text"  # the text read in the image: the OCR model's lines, then the vision LLM's reading
TEXT_OCR, TEXT_LLM = "Xmp.pixdex.TextOCR", "Xmp.pixdex.TextLLM"  # each source's own, so neither overwrites the other
# The OCR reader (model and settings) that read pixdex:TextOCR, and the content hash it read it from: a rebuild,
# or another machine, takes the text from the sidecar instead of reading the image again.
TEXT_OCR_BY, TEXT_OCR_OF = "Xmp.pixdex.TextOCRBy", "Xmp.pixdex.TextOCROf"
# The standard location fields, and what pixdex wrote into each from GPS (a value that differs is the person's).
LOCATION = {"city": "Xmp.photoshop.City", "state": "Xmp.photoshop.State", "country": "Xmp.photoshop.Country",
            "country_code": "Xmp.iptc.CountryCode"}
LOCATION_OURS = {"city": "Xmp.pixdex.City", "state": "Xmp.pixdex.State", "country": "Xmp.pixdex.Country",
                 "country_code": "Xmp.pixdex.CountryCode"}
EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF = "Xmp.pixdex.Embedding", "Xmp.pixdex.EmbeddingModel", "Xmp.pixdex.EmbeddingOf"
IMAGE_ID = "Xmp.pixdex.Id"  # the image's catalog id: a rebuild, or another machine, gives it the same one
IMAGE_OF = "Xmp.pixdex.IdOf"  # the content hash the id was written for (a person's edit, with or without models)
GPS_LATITUDE, GPS_LONGITUDE = "Xmp.exif.GPSLatitude", "Xmp.exif.GPSLongitude"

SEQ_KEYS = frozenset({TAGS_LIST, CREATOR})  # lists written as rdf:Seq (as digiKam and XMP define them); others Bag
LANG_ALT_KEYS = frozenset({TITLE, DESCRIPTION})


def uri_of(key: str) -> str:
    """The RDF predicate of a pyexiv2 key (``Xmp.dc.subject`` → ``http://purl.org/dc/elements/1.1/subject``)."""
    _xmp, prefix, name = key.split(".", 2)
    return NAMESPACES[prefix][0] + name


def key_of(uri: str, fallback_prefix: str | None = None) -> str:
    """The pyexiv2 key of an RDF predicate; a namespace pixdex does not know keeps the document's prefix
    (or its URI): such keys only tell that something else is there."""
    for prefix, (namespace, _xml) in NAMESPACES.items():
        if uri.startswith(namespace) and "/" not in uri[len(namespace):] and "#" not in uri[len(namespace):]:
            return f"Xmp.{prefix}.{uri[len(namespace):]}"
    return f"Xmp.{fallback_prefix or uri}"


URIS = {key: uri_of(key) for key in (  # the RDF predicates behind pyexiv2's keys, for the graph check
    SUBJECT, DESCRIPTION, TITLE, CREATOR, HIERARCHICAL, TAGS_LIST, LAST_KEYWORDS, METADATA_DATE, RATING,
    LABEL, "Xmp.photoshop.Headline", "Xmp.photoshop.City", "Xmp.photoshop.State", "Xmp.photoshop.Country",
    "Xmp.iptc.Location", "Xmp.iptc.CountryCode")}

OWN_KEYS = frozenset({SUBJECT, HIERARCHICAL, TAGS_LIST, OURS, MACHINE, REJECTED, PERSON, MODEL, DESCRIBED,
                      METADATA_DATE, EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF, IMAGE_ID, IMAGE_OF, TEXT, TEXT_OCR,
                      TEXT_LLM,
                      TEXT_OCR_BY, TEXT_OCR_OF,
                      *LOCATION_OURS.values()})
# pixdex's, per image
RECORD = (OURS, MACHINE, REJECTED, PERSON, MODEL, EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF, IMAGE_ID, IMAGE_OF)
