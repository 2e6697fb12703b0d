"""Is a rewritten XMP packet faithful? Compared as RDF graphs, not as pyexiv2 sees them.

exiv2 reads a packet into its own data model and serializes it again. What it may lose on the
way — a namespace URI's trailing ``/`` (the properties move to another namespace), the order of
an ``rdf:Alt`` (its default changes), an ``rdf:resource`` turned into a literal — is invisible in
pyexiv2's key/value view, but shows in the triples. `changed_triples` parses both packets with
rdflib, removes every property pixdex owns (with the containers and structures below it), and
compares what is left as graphs (blank nodes matched by structure, `rdflib.compare`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

import rdflib
from rdflib.compare import isomorphic, to_canonical_graph
from rdflib.term import Node

from pixdex.indexer.sidecars.keys import key_of

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
BASE = "urn:pixdex:sidecar"  # rdf:about="" resolves against the same base on both sides


class NotRdf(ValueError):
    """The packet is not RDF/XML rdflib can read."""


def graph_of(packet: bytes) -> rdflib.Graph:
    """The RDF graph of an XMP packet (the ``rdf:RDF`` element inside ``x:xmpmeta``, or a bare one)."""
    try:
        root = ET.fromstring(_strip_bom(packet))
    except ET.ParseError as exc:
        raise NotRdf(f"not well-formed XML ({exc})") from None
    rdf = root if root.tag == f"{{{RDF_NS}}}RDF" else root.find(f".//{{{RDF_NS}}}RDF")
    graph = rdflib.Graph()
    if rdf is None:
        return graph
    try:
        graph.parse(data=ET.tostring(rdf, encoding="unicode"), format="xml", publicID=BASE)
    except Exception as exc:  # noqa: BLE001 - rdflib raises several kinds for malformed RDF/XML
        raise NotRdf(f"not valid RDF/XML ({type(exc).__name__}: {exc})") from None
    return graph


XPACKET = re.compile(rb"<\?xpacket[^>]*\?>")


def _strip_bom(packet: bytes) -> bytes:
    # The xpacket wrapper is not part of the RDF, and its begin= attribute may hold a byte XML
    # forbids (XMP2.xmp: 0x1A); trailing NULs and padding of some writers are cut too.
    if packet.startswith((b"\xff\xfe", b"\xfe\xff")):
        packet = packet.decode("utf-16").encode()
    return XPACKET.sub(b"", packet).rstrip(b"\0 \t\r\n")


def without(graph: rdflib.Graph, owned: Iterable[str]) -> rdflib.Graph:
    """A copy of `graph` without the properties named in `owned` (full URIs, or a namespace URI
    ending in ``*`` for all its properties), nor the blank nodes only they lead to."""
    exact = {o for o in owned if not o.endswith("*")}
    prefixes = tuple(o[:-1] for o in owned if o.endswith("*"))
    out = rdflib.Graph()
    out += graph
    doomed = [(s, p, o) for s, p, o in out if str(p) in exact or (prefixes and str(p).startswith(prefixes))]
    stack = []
    for triple in doomed:
        out.remove(triple)
        stack.append(triple[2])
    while stack:  # the containers and structures below a removed property go with it
        node = stack.pop()
        if not isinstance(node, rdflib.BNode) or any(True for _ in out.triples((None, None, node))):
            continue
        for triple in list(out.triples((node, None, None))):
            out.remove(triple)
            stack.append(triple[2])
    return out


def changed_triples(before: bytes, after: bytes, owned: Iterable[str]) -> list[str]:
    """What differs between the two packets outside `owned`, as short readable lines ([] if nothing)."""
    owned = list(owned)
    kept_before, kept_after = without(graph_of(before), owned), without(graph_of(after), owned)
    if isomorphic(kept_before, kept_after):
        return []
    iso_before, iso_after = to_canonical_graph(kept_before), to_canonical_graph(kept_after)
    only_before, only_after = iso_before - iso_after, iso_after - iso_before
    lines = [f"loses {_short(t, iso_before)}" for t in _leaves(only_before)[:2]]
    lines += [f"adds {_short(t, iso_after)}" for t in _leaves(only_after)[:2]]
    return lines or ["the structure of the graph changed"]


def _leaves(graph: rdflib.Graph) -> list[tuple[Node, Node, Node]]:
    """The differing triples that hold values (not the blank nodes between), most telling first."""
    triples = sorted(graph)
    values = [t for t in triples if not isinstance(t[2], rdflib.BNode)]
    return values or triples


def _short(triple: tuple[Node, Node, Node], graph: rdflib.Graph) -> str:
    """`<top property URI>/local/…: value`, walking up from a blank node to the property that holds it."""
    s, p, o = triple
    path, up = [_local(p)], p
    for _ in range(8):
        if not isinstance(s, rdflib.BNode):
            break
        parent = next(graph.triples((None, None, s)), None)
        if parent is None:
            break
        s, up, _o = parent
        path.insert(0, _local(up))
    path[0] = f"<{up}>"
    if isinstance(o, rdflib.Literal):
        text = str(o)
        value = repr(text[:40] + ("…" if len(text) > 40 else "")) + (f"@{o.language}" if o.language else "")
    elif isinstance(o, rdflib.BNode):
        value = "(structure)"
    else:
        value = f"<{o}>"
    return f"{'/'.join(path)} = {value}"


def _local(uri: Node) -> str:
    text = str(uri)
    return text.rsplit("#", 1)[-1].rsplit("/", 1)[-1] or text


def props_of_graph(packet: bytes) -> dict[str, object]:
    """Every property of the packet in pyexiv2's form (``Xmp.dc.subject`` …; `keys.key_of`): lists
    for Bag/Seq, {'lang="…"': text} for Alt, text otherwise, ``type="Struct"`` for a structure. The
    described resource's own properties come first; those of other nodes (rdf:nodeID descriptions,
    structure fields) only tell that something else is there. For packets exiv2 cannot read, or would
    read wrong (rdf:nodeID): their keywords, captions and pixdex's own record still count."""
    graph = graph_of(packet)
    prefixes = {str(uri): prefix for prefix, uri in graph.namespaces()}
    out: dict[str, object] = {}
    triples = sorted(graph, key=lambda t: isinstance(t[0], rdflib.BNode))
    for _s, predicate, value in triples:
        uri = str(predicate)
        if uri.startswith(RDF_NS):
            continue
        namespace, local = _split_uri(uri)
        key = key_of(uri, f"{prefixes.get(namespace, namespace)}.{local}")
        found, known = _value(graph, value), out.get(key)
        if isinstance(known, list) and isinstance(found, list):  # a list given twice (not XMP): every item counts
            out[key] = list(dict.fromkeys([*known, *found]))
        elif key not in out:
            out[key] = found
    return out


def _split_uri(uri: str) -> tuple[str, str]:
    cut = max(uri.rfind("/"), uri.rfind("#")) + 1
    return uri[:cut], uri[cut:]


def _value(graph: rdflib.Graph, node: Node) -> object:
    """One property's value in pyexiv2's form."""
    if not isinstance(node, rdflib.BNode):
        return str(node)
    kinds = {str(o) for o in graph.objects(node, rdflib.URIRef(RDF_NS + "type"))}
    items = sorted(((int(str(p)[len(RDF_NS) + 1:]), o) for _x, p, o in graph.triples((node, None, None))
                    if str(p).startswith(RDF_NS + "_") and str(p)[len(RDF_NS) + 1:].isdigit()),
                   key=lambda item: item[0])
    if RDF_NS + "Alt" in kinds:
        return {f'lang="{getattr(o, "language", None) or "x-default"}"': str(o) for _n, o in items}
    if kinds & {RDF_NS + "Bag", RDF_NS + "Seq"} or items:
        return [str(o) for _n, o in items if isinstance(o, rdflib.Literal)]
    return 'type="Struct"'
