"""Packed scoring rows: many scored sequences share one forward pass and one KV-cached prefix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def branch_length(openings: list[list[int]]) -> int:
    """Tokens the opening branches add after a scored sequence (each opening but its last)."""
    return sum(len(opening) - 1 for opening in openings)


def pack(segments: list[tuple[int, int]], base_length: int, branch: int) -> list[list[int]]:
    """First-fit-decreasing packing of segments (by new tokens + branches) into rows.

    A row holds as many tokens as ``base`` plus the branches (or the longest segment).
    """
    sizes = [new + branch for _, new in segments]
    capacity = max(base_length + branch, *sizes)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(segments)), key=lambda i: -sizes[i]):
        for r, free in enumerate(room):
            if sizes[i] <= free:
                rows[r].append(i)
                room[r] -= sizes[i]
                break
        else:
            rows.append([i])
            room.append(capacity - sizes[i])
    return rows


class PackedLayout:
    """Rows of packed segments, each scoring every opening as a branch, in one forward pass.

    A segment is one scored sequence: the first ``past`` tokens come from the KV cache (shared
    by all rows), its ``new`` tokens sit in the row, followed by the openings' tokens (all but
    each opening's last), one branch per opening. A token sees the cached past of its own
    segment and its segment's earlier tokens; a branch token sees the segment's new tokens and
    its own branch only, at the positions it would have if that opening alone followed the
    sequence. Padding after the last segment sees only itself.
    """

    def __init__(
        self, openings: list[list[int]], rows: list[list[tuple[int, int]]], cache_len: int
    ) -> None:
        self.n_openings = len(openings)
        self.rows = rows
        self.cache_len = cache_len
        self.branch_tokens = [t for opening in openings for t in opening[:-1]]
        self.branch_spans: list[tuple[int, int]] = []  # within the branch block
        self.term_keep: list[int] = []  # per opening token: which kept logit predicts it
        self.term_token: list[int] = []
        self.term_opening: list[int] = []
        for k, opening in enumerate(openings):
            offset = sum(len(o) - 1 for o in openings[:k])
            self.branch_spans.append((offset, offset + len(opening) - 1))
            for t, token in enumerate(opening):
                # kept logits of a segment: its last new token, then each branch column
                self.term_keep.append(0 if t == 0 else 1 + offset + t - 1)
                self.term_token.append(token)
                self.term_opening.append(k)
        branch = len(self.branch_tokens)
        self.starts = [
            np.cumsum([0] + [new + branch for _, new in row[:-1]]).tolist() for row in rows
        ]
        self.width = max(
            starts[-1] + row[-1][1] + branch for starts, row in zip(self.starts, rows, strict=True)
        )
        self.max_segments = max(len(row) for row in rows)

    @property
    def keep(self) -> torch.Tensor:
        """(rows, max_segments * (1 + branch)) columns whose logits are needed (0: unused)."""
        branch = len(self.branch_tokens)
        keep = torch.zeros((len(self.rows), self.max_segments, 1 + branch), dtype=torch.long)
        for r, (row, starts) in enumerate(zip(self.rows, self.starts, strict=True)):
            for j, ((_, new), start) in enumerate(zip(row, starts, strict=True)):
                keep[r, j] = torch.arange(start + new - 1, start + new + branch)
        return keep.view(len(self.rows), -1)

    @property
    def positions(self) -> torch.Tensor:
        positions = torch.zeros((len(self.rows), self.width), dtype=torch.long)
        for r, (row, starts) in enumerate(zip(self.rows, self.starts, strict=True)):
            for (past, new), start in zip(row, starts, strict=True):
                positions[r, start : start + new] = torch.arange(past, past + new)
                for a, b in self.branch_spans:
                    at = start + new
                    positions[r, at + a : at + b] = torch.arange(past + new, past + new + b - a)
        return positions

    def mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive (rows, 1, width, cache_len + width) mask: 0 = may attend, min = may not."""
        c, w = self.cache_len, self.width
        allowed = torch.zeros((len(self.rows), w, c + w), dtype=torch.bool)
        causal = torch.ones((w, w), dtype=torch.bool).tril()
        diagonal = torch.arange(w)
        allowed[:, diagonal, c + diagonal] = True  # padding sees itself (no empty rows)
        for r, (row, starts) in enumerate(zip(self.rows, self.starts, strict=True)):
            for (past, new), start in zip(row, starts, strict=True):
                end = start + new
                seg = slice(start, end + len(self.branch_tokens))
                allowed[r, seg, :past] = True
                allowed[r, start:end, c + start : c + end] = causal[:new, :new]
                allowed[r, end : seg.stop, c + start : c + end] = True
                for a, b in self.branch_spans:
                    allowed[r, end + a : end + b, c + end + a : c + end + b] = causal[
                        : b - a, : b - a
                    ]
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )[:, None]
