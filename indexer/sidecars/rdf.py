"""Set pixdex's properties in an XMP packet at the RDF/XML level, leaving the rest as its program wrote it.

exiv2 (XMP Toolkit) parses a packet into its own model and writes it anew, and cannot keep what that
model lacks: ``rdf:nodeID`` references, the order of a language alternative, an empty alternative, a
structure typed with ``rdf:type``, a non-standard prefix for ``rdf:`` (`xmpgraph` shows each). For such
sidecars pixdex edits the XML itself with lxml:

- a property pixdex owns is changed where it is: an attribute keeps its place, an element keeps its
  prefix and place, and a list's items are replaced inside its existing container — the one below the
  element, or the one an ``rdf:nodeID`` points at (its type set to what pixdex writes: ``rdf:Bag``, or
  ``rdf:Seq`` for ``digiKam:TagsList`` and ``dc:creator``);
- a property that is new goes into the first ``rdf:Description`` of the resource whose scope already
  binds its namespace, else into one ``rdf:Description`` pixdex adds, which declares the namespaces it
  needs (with their usual prefix, or a free variant where the document uses it for another namespace);
- a deleted property goes, and so does a node only it pointed at by ``rdf:nodeID``;
- new elements are indented like their neighbours; the bytes before and after the root element (the
  ``<?xpacket?>`` wrapper, comments, padding) and the packet's encoding stay as they were.

The values are pixdex's, in pyexiv2's form (the same ones the exiv2 path writes): text, a list (a Bag or
Seq), ``{'lang="x-default"': text}`` (an Alt), None or empty (delete). The caller checks the result on
the RDF graph, as it does exiv2's (`sidecar.check_graph`). Hand-written on lxml because no library edits
RDF/XML in place: rdflib re-serializes a whole graph in its own layout.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from pixdex.indexer.sidecars.keys import LANG_ALT_KEYS, NAMESPACES, SEQ_KEYS

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ABOUT, NODE_ID, LI = f"{{{RDF}}}about", f"{{{RDF}}}nodeID", f"{{{RDF}}}li"
CONTAINERS = {f"{{{RDF}}}{kind}" for kind in ("Bag", "Seq", "Alt")}
BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xef\xbb\xbf", "utf-8"),
        (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))
ROOT_START = re.compile(r"<(?![?!])")
PACKET_END = re.compile(r"<\?xpacket\s+end\b")


class NotXmp(ValueError):
    """The packet is not XML with an ``rdf:RDF`` element: nothing pixdex may edit."""


def edit_packet(packet: bytes, values: dict[str, Any]) -> bytes:
    """`packet` with each pyexiv2 key of `values` set to its value (None or empty: deleted)."""
    bom, encoding, head, body, tail = _split(packet)
    root = _parse(body)
    rdf = root if root.tag == f"{{{RDF}}}RDF" else next(root.iter(f"{{{RDF}}}RDF"), None)
    if rdf is None:
        raise NotXmp("no rdf:RDF element")
    document = _Document(rdf, values)
    for key, value in values.items():
        document.set(key, value)
    serialized: str = etree.tostring(root.getroottree(), encoding="unicode")
    return bom + (head + serialized + tail).encode(encoding)


def _split(packet: bytes) -> tuple[bytes, str, str, str, str]:
    """(byte-order mark, encoding, text before the root element, the root element, text after it)."""
    bom, encoding = next(((b, e) for b, e in BOMS if packet.startswith(b)), (b"", "utf-8"))
    try:
        text = packet[len(bom):].decode(encoding)
    except UnicodeDecodeError as exc:
        raise NotXmp(f"not {encoding.upper()} text ({exc.reason} at byte {exc.start})") from None
    start = ROOT_START.search(text)
    if start is None:
        raise NotXmp("no XML element")
    end = PACKET_END.search(text, start.start())
    stop = end.start() if end else len(text.rstrip("\0 \t\r\n"))
    body = text[start.start():stop]
    stripped = body.rstrip()
    return bom, encoding, text[:start.start()], stripped, body[len(stripped):] + text[stop:]


def _parse(body: str) -> Any:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=False,
                             remove_comments=False, remove_pis=False, strip_cdata=False)
    try:
        return etree.fromstring(body.encode("utf-8"), parser)
    except etree.XMLSyntaxError as exc:
        raise NotXmp(f"not well-formed XML ({exc})") from None


class _Document:
    """The ``rdf:RDF`` element being edited, and the resource its top-level descriptions speak of."""

    def __init__(self, rdf: Any, values: dict[str, Any]) -> None:
        self.rdf = rdf
        tops = [e for e in rdf if isinstance(e.tag, str)]
        # XMP describes one resource: every top-level description with an rdf:about speaks of it (as exiv2
        # and exiftool read them), whatever the about says; one with an rdf:nodeID is another node.
        self.main = [e for e in tops if e.get(ABOUT) is not None and e.tag == f"{{{RDF}}}Description"]
        self.about = self.main[0].get(ABOUT) if self.main else ""
        self.block: Any = None  # the rdf:Description pixdex adds for properties with no home yet
        self.homeless = {NAMESPACES[key.split(".")[1]] for key, value in values.items()
                         if value not in (None, [], {}) and not self._occurrences(_name(key))
                         and self._declared(NAMESPACES[key.split(".")[1]][0]) is None}

    def set(self, key: str, value: Any) -> None:
        prefix, name = key.split(".")[1], _name(key)
        found = self._occurrences(name)
        if value is None or value == [] or value == {}:
            for holder, element in found:
                self._drop(holder, name, element)
            return
        keep = self._keep(found, value, key)
        for holder, element in found:
            if (holder, element) != keep:
                self._drop(holder, name, element)
        if keep is not None and keep[1] is None:  # an attribute: simple text stays one
            keep[0].set(name, str(value))
        elif keep is not None:
            self._fill(keep[1], value, key)
        else:
            holder = self._home(NAMESPACES[prefix][0])
            self._fill(_append(holder, etree.SubElement(holder, name)), value, key)

    def _occurrences(self, name: str) -> list[tuple[Any, Any]]:
        """(description, element) for each place the property is: element None for an attribute."""
        out: list[tuple[Any, Any]] = []
        for description in self.main:
            if description.get(name) is not None:
                out.append((description, None))
            out += [(description, child) for child in description if child.tag == name]
        return out

    def _keep(self, found: list[tuple[Any, Any]], value: Any, key: str) -> tuple[Any, Any] | None:
        """The occurrence that takes the new value: an attribute only for text, else the first element."""
        if not found:
            return None
        simple = not isinstance(value, (list, dict)) and key not in LANG_ALT_KEYS
        elements = [f for f in found if f[1] is not None]
        return found[0] if simple and found[0][1] is None else elements[0] if elements else None

    def _drop(self, holder: Any, name: str, element: Any) -> None:
        if element is None:
            del holder.attrib[name]
            return
        self._unlink(element)
        _remove(element)

    def _unlink(self, element: Any) -> None:
        """Before `element` goes or is emptied: the node its rdf:nodeID points at goes too, when nothing
        else points at it."""
        node_id = element.get(NODE_ID)
        if node_id is None:
            return
        same = [e for e in self.rdf.iter() if isinstance(e.tag, str) and e.get(NODE_ID) == node_id and e is not element]
        if len(same) == 1 and same[0].getparent() is self.rdf:
            _remove(same[0])

    def _target(self, element: Any) -> Any:
        """The container an element holds: its child rdf:Bag/Seq/Alt, or the one its rdf:nodeID names."""
        inline = next((c for c in element if c.tag in CONTAINERS), None)
        node_id = element.get(NODE_ID)
        if inline is not None or node_id is None:
            return inline
        nodes = [e for e in self.rdf if isinstance(e.tag, str) and e.get(NODE_ID) == node_id and e.tag in CONTAINERS]
        referring = [e for e in self.rdf.iter() if isinstance(e.tag, str) and e.get(NODE_ID) == node_id]
        return nodes[0] if len(nodes) == 1 and len(referring) == 2 else None

    def _fill(self, element: Any, value: Any, key: str) -> None:
        """Make `element` hold `value`: a list in its existing container when it has one, else anew."""
        kind = "Seq" if key in SEQ_KEYS else "Bag"
        if isinstance(value, list) and (container := self._target(element)) is not None:
            container.tag = f"{{{RDF}}}{kind}"
            _set_members(container, [(None, str(v)) for v in value])
            return
        self._unlink(element)
        for child in list(element):
            element.remove(child)
        element.attrib.clear()
        element.text = None
        if isinstance(value, dict) or key in LANG_ALT_KEYS:
            _set_members(_append(element, etree.SubElement(element, f"{{{RDF}}}Alt")), _alt_items(value))
        elif isinstance(value, list):
            _set_members(_append(element, etree.SubElement(element, f"{{{RDF}}}{kind}")),
                         [(None, str(v)) for v in value])
        else:
            element.text = str(value)

    def _declared(self, namespace: str) -> Any:
        """The first description of the resource whose scope binds `namespace` (None: none)."""
        return next((d for d in self.main if namespace in d.nsmap.values()), None)

    def _home(self, namespace: str) -> Any:
        """Where a new property of `namespace` goes (see the module's docstring)."""
        declared = self._declared(namespace)
        if declared is not None:
            return declared
        if self.block is None:
            taken = {(p, u) for e in self.rdf.getroottree().iter() if isinstance(e.tag, str)
                     for p, u in e.nsmap.items()}
            nsmap = {_free_prefix(xml, uri, taken): uri for uri, xml in sorted(self.homeless, key=_order)}
            self.block = _append(self.rdf, etree.SubElement(self.rdf, f"{{{RDF}}}Description", {ABOUT: self.about},
                                                            nsmap=nsmap))
            self.main.append(self.block)
        return self.block


def _name(key: str) -> str:
    """The Clark name (``{namespace}local``) of a pyexiv2 key."""
    _xmp, prefix, local = key.split(".", 2)
    return f"{{{NAMESPACES[prefix][0]}}}{local}"


def _order(namespace: tuple[str, str]) -> int:
    return [n for n, _x in NAMESPACES.values()].index(namespace[0])


def _free_prefix(prefix: str, uri: str, taken: set[tuple[str | None, str]]) -> str:
    """`prefix`, or `prefix1`, `prefix2`… when the document binds it to another namespace somewhere."""
    candidate, n = prefix, 0
    while any(p == candidate and u != uri for p, u in taken):
        n += 1
        candidate = f"{prefix}{n}"
    return candidate


def _alt_items(value: Any) -> list[tuple[str | None, str]]:
    if isinstance(value, dict):
        return [(k.split('"')[1] if '"' in k else k, str(v)) for k, v in value.items()]
    return [("x-default", str(value))]


def _indent(element: Any) -> str | None:
    """The line break and indentation before `element` (None on a one-line packet)."""
    previous, parent = element.getprevious(), element.getparent()
    space: str | None = previous.tail if previous is not None else parent.text if parent is not None else None
    if space and not space.strip() and "\n" in space:
        return space[space.rindex("\n"):]
    return None


def _append(parent: Any, child: Any) -> Any:
    """Lay out `child`, just appended as `parent`'s last child, like its siblings (or one level in)."""
    siblings = list(parent)[:-1]
    if siblings:
        child.tail, siblings[-1].tail = siblings[-1].tail, parent.text
    else:
        own = _indent(parent)
        if own is not None:
            parent.text, child.tail = own + " ", own
    return child


def _set_members(container: Any, items: list[tuple[str | None, str]]) -> None:
    """Replace the container's members with `items` ((language or None, text)), laid out like the old ones."""
    members = list(container)
    inner, closing = (container.text, members[-1].tail) if members and container.text and \
        not container.text.strip() else (None, None)
    for member in members:
        container.remove(member)
    container.text = None
    for language, text in items:
        member = _append(container, etree.SubElement(container, LI))
        member.text = text
        if language:
            member.set(XML_LANG, language)
    if members and inner is not None and len(container):
        container.text = inner
        for member in container[:-1]:
            member.tail = inner
        container[-1].tail = closing


def _remove(element: Any) -> None:
    """Remove `element` and the whitespace before it; a last child hands its tail to the one before it."""
    parent, previous = element.getparent(), element.getprevious()
    if element.getnext() is None:
        if previous is not None:
            previous.tail = element.tail
        else:
            parent.text = element.tail
    parent.remove(element)
