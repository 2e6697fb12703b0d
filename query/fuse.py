"""Reciprocal Rank Fusion, pure: ``score(d) = Σ weight_side / (k + rank_side(d))``, ranks from 1."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    rank: int
    score: float


@dataclass(frozen=True)
class Fused:
    id: int
    score: float
    vector: Part | None
    text: Part | None


def rrf(vector: list[tuple[int, float]], text: list[tuple[int, float]], *, k: int = 60,
        vector_weight: float = 1.0, text_weight: float = 1.0) -> list[Fused]:
    """Fuse two ranked lists of (id, score); ties keep the order in which ids first appeared."""
    parts: dict[int, dict[str, Part]] = {}
    for side, hits in (("vector", vector), ("text", text)):
        for rank, (image_id, score) in enumerate(hits, 1):
            parts.setdefault(image_id, {}).setdefault(side, Part(rank, score))
    fused = []
    for image_id, sides in parts.items():
        total = sum(weight / (k + sides[side].rank)
                    for side, weight in (("vector", vector_weight), ("text", text_weight)) if side in sides)
        fused.append(Fused(image_id, total, sides.get("vector"), sides.get("text")))
    return sorted(fused, key=lambda f: -f.score)
