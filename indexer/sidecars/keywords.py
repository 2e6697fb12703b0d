"""Which keywords a sidecar holds, and where each goes when pixdex writes it.

Each program reads one field: digiKam the first non-empty of ``digiKam:TagsList`` →
``MicrosoftPhoto:LastKeywordXMP`` → ``lr:hierarchicalSubject`` → ``dc:subject``; darktable
``lr:hierarchicalSubject``, else ``dc:subject``; Immich TagsList ?? HierarchicalSubject ?? Keywords.
So every keyword a person has in any of them is written to all three: flat (its leaf) in
``dc:subject``, as its own path in ``lr:hierarchicalSubject`` (``A|B``) and ``digiKam:TagsList``
(an ``rdf:Seq``, ``A/B``). pixdex's machine keywords go under ``<tag_parent>`` (default ``pixdex``)
in the two hierarchical fields and flat in ``dc:subject``. A ``/`` or ``|`` inside one level of a
path becomes ``∕`` (U+2215) or ``¦`` (U+00A6), so it cannot become a level of its own. A
``dc:subject`` entry that spells a path the hierarchical fields hold (``Places|Tokyo``) is that path,
not a flat keyword of its own.

A machine keyword missing from any of the fields pixdex put it in was removed by a person, in some
program: it is recorded as rejected (``pixdex:Rejected``). One a person adds back by hand is theirs.
Pure functions over pyexiv2-form property dicts: no file is touched here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pixdex.indexer.metadata.reconcile import as_list
from pixdex.indexer.sidecars.keys import (
    HIERARCHICAL,
    LAST_KEYWORDS,
    MACHINE,
    OURS,
    PERSON,
    REJECTED,
    SUBJECT,
    TAGS_LIST,
)

ESCAPES = {"/": "\u2215", "|": "\u00a6"}


def escape_level(level: str) -> str:
    for char, replacement in ESCAPES.items():
        level = level.replace(char, replacement)
    return level


def unescape_level(level: str) -> str:
    for char, replacement in ESCAPES.items():
        level = level.replace(replacement, char)
    return level


def _path_of(entry: str, separator: str) -> tuple[str, ...]:
    return tuple(unescape_level(level.strip()) for level in entry.split(separator) if level.strip())


def person_paths(xmp: dict[str, Any], parent: str) -> list[tuple[str, ...]]:
    """Every keyword a person has, in any of the fields programs read, as paths (flat ones have one level),
    minus those a person removed since pixdex wrote them everywhere (`removed_person`)."""
    removed = removed_person(xmp)
    return [p for p in _all_person_paths(xmp, parent) if p not in removed]


def removed_person(xmp: dict[str, Any]) -> set[tuple[str, ...]]:
    """A person's keyword that pixdex had written to all three fields (`pixdex:Person`) and that is now missing
    from one of them was removed by a person, in a program that edits only some fields (darktable: dc:subject
    and lr:hierarchicalSubject): it goes from all of them, instead of coming back from the third."""
    subject = set(as_list(xmp.get(SUBJECT)))
    hierarchical = {_path_of(h, "|") for h in as_list(xmp.get(HIERARCHICAL))}
    tags_list = {_path_of(t, "/") for t in as_list(xmp.get(TAGS_LIST))}
    recorded = [_path_of(p, "|") for p in as_list(xmp.get(PERSON))]
    return {p for p in recorded if p and not (p[-1] in subject and p in hierarchical and p in tags_list)}


def _all_person_paths(xmp: dict[str, Any], parent: str) -> list[tuple[str, ...]]:
    ours = set(as_list(xmp.get(OURS)))
    paths: list[tuple[str, ...]] = []
    for key, separator in ((HIERARCHICAL, "|"), (TAGS_LIST, "/"), (LAST_KEYWORDS, "/")):
        for entry in as_list(xmp.get(key)):
            path = _path_of(entry, separator)
            if path and path[0] != parent and path not in paths:
                paths.append(path)
    leaves = {p[-1] for p in paths}
    for keyword in as_list(xmp.get(SUBJECT)):
        if keyword not in ours and keyword not in leaves and keyword.strip() and not _spells_a_path(keyword, paths):
            paths.append((keyword,))
            leaves.add(keyword)
    return paths


def _spells_a_path(keyword: str, paths: list[tuple[str, ...]]) -> bool:
    """Whether a dc:subject entry is one of the hierarchical paths written out (``Places|Tokyo``, as some
    programs put it in dc:subject too): that path, not a flat keyword with a ``|`` in its name."""
    return any(len(path) > 1 and path in paths for path in (_path_of(keyword, "|"), _path_of(keyword, "/")))


def rejected_now(xmp: dict[str, Any], parent: str) -> list[str]:
    """pixdex's rejected record, plus the machine keywords a person has removed since pixdex last wrote."""
    rejected = as_list(xmp.get(REJECTED))
    subject, ours = set(as_list(xmp.get(SUBJECT))), set(as_list(xmp.get(OURS)))
    hierarchical = {_path_of(h, "|") for h in as_list(xmp.get(HIERARCHICAL))}
    tags_list = {_path_of(t, "/") for t in as_list(xmp.get(TAGS_LIST))}
    theirs = {p[-1].casefold() for p in person_paths(xmp, parent)}
    for tag in as_list(xmp.get(MACHINE)):
        if tag in rejected or tag.casefold() in theirs:
            continue
        path = (parent, tag)
        if path not in hierarchical or path not in tags_list or (tag in ours and tag not in subject):
            rejected.append(tag)
    return rejected


@dataclass(frozen=True)
class KeywordPlan:
    subject: list[str]
    hierarchical: list[str]
    tags_list: list[str]
    ours: list[str]
    machine: list[str]
    rejected: list[str]
    person: list[str]

    def values(self) -> dict[str, list[str]]:
        return {SUBJECT: self.subject, HIERARCHICAL: self.hierarchical, TAGS_LIST: self.tags_list,
                OURS: self.ours, MACHINE: self.machine, REJECTED: self.rejected, PERSON: self.person}


def plan_keywords(xmp: dict[str, Any], machine_tags: Iterable[str], parent: str,
                  extra_person: Iterable[str] = (), remove: Iterable[str] = (),
                  also_rejected: Iterable[str] = ()) -> KeywordPlan:
    """The keyword fields after this merge: the person's keywords in all three fields, the machine's under
    `parent` minus what a person rejected or has as their own. `extra_person`/`remove`: a person's edit
    made through pixdex (removing a machine keyword rejects it)."""
    gone = set(remove)
    rejected = list(dict.fromkeys([*rejected_now(xmp, parent), *also_rejected]))
    paths = (_path_of(h, "|") for h in as_list(xmp.get(HIERARCHICAL)))
    old_machine = set(as_list(xmp.get(MACHINE))) | {p[1] for p in paths if len(p) == 2 and p[0] == parent}
    rejected += [t for t in gone if t in old_machine and t not in rejected]
    dropped = removed_person(xmp)
    person = [p for p in person_paths(xmp, parent) if p[-1] not in gone and "|".join(p) not in gone]
    person += [(k,) for k in extra_person if k.strip() and not any(p[-1] == k for p in person)]
    leaves = [p[-1] for p in person]
    folded = {leaf.casefold() for leaf in leaves}
    proposed = [t for t in dict.fromkeys(machine_tags) if t.strip() and t not in rejected and t not in gone]
    machine = [t for t in proposed if t.casefold() not in folded]  # a person's own keyword is never doubled
    ours_before = set(as_list(xmp.get(OURS)))
    dropped_leaves = {p[-1] for p in dropped} - set(leaves)
    subject = [s for s in as_list(xmp.get(SUBJECT)) if s not in gone and s not in dropped_leaves
               and (s not in ours_before or s in leaves)]
    subject += [leaf for leaf in leaves if leaf not in subject]
    ours = [t for t in machine if t not in subject]
    subject += ours

    def hierarchy(key: str, separator: str) -> list[str]:
        kept = [e for e in as_list(xmp.get(key)) if _path_of(e, separator)[:1] != (parent,)
                and _path_of(e, separator) in person]
        present = {_path_of(e, separator) for e in kept}
        kept += [separator.join(escape_level(level) for level in p) for p in person if p not in present]
        return kept + [f"{parent}{separator}{escape_level(t)}" for t in machine]

    # The record holds the machine keywords the person has too: if they remove one later, it is rejected.
    return KeywordPlan(subject, hierarchy(HIERARCHICAL, "|"), hierarchy(TAGS_LIST, "/"), ours, proposed, rejected,
                       ["|".join(escape_level(level) for level in p) for p in person])


