"""Where each frame of a video lies, from one demuxing pass, and which stretches of it a selection decodes.

A frame's index is its rank among the presented packets' timestamps (an MP4/MOV edit list's hidden packets
are not presented): frames are placed by their timestamp, never by counting what a decoder gave after a
seek. A decode may start at a *seek point*: a key frame that its bitstream proves a random access point
(:mod:`.bitstream`) and that no packet decoded before it is shown after it.

A sampled frame needs itself and its reference: a frame shown ``reach`` frames or fewer before it, or the
last I or P frame shown before it (see :mod:`.reader`). Decoding from the last seek point ``reach`` frames or
more before the sampled frame covers both, since a seek point is an I frame. :meth:`FrameIndex.runs` groups the
sampled frames into runs of one continuous decode each, and jumps ahead only when that skips at least
``min_skipped`` frames; :func:`may_seek` says beforehand, from the sampled frames alone, whether it could (else
the index is not worth a scan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_DTS = np.iinfo(np.int64).min


@dataclass(frozen=True)
class FrameIndex:
    """Frame timestamps in presentation order and the frames a decode may start at."""

    pts: np.ndarray  # int64 [N]: frame i's timestamp (stream time base), ascending
    seek_points: np.ndarray  # int64: ascending frame indices whose packet may start a decode
    seek_dts: np.ndarray  # int64: those packets' decoding timestamps (NO_DTS where unknown)
    packet_pts: np.ndarray  # int64 [P]: every video packet's timestamp, in decoding order (hidden ones too)

    @classmethod
    def build(
        cls,
        packet_pts: list[int | None],
        packet_dts: list[int | None],
        presented: list[bool],
        random_access: list[bool],
    ) -> FrameIndex | None:
        """From the video packets in decoding order: their timestamps, whether each is presented, and
        whether each is a random access point. None when timestamps are missing or repeated (then frames
        can only be counted, from the first)."""
        if not packet_pts or any(pts is None for pts in packet_pts):
            return None
        decode_order = np.asarray(packet_pts, dtype=np.int64)
        if np.unique(decode_order).size != decode_order.size:
            return None
        shown = np.asarray(presented, dtype=bool)
        frames = np.sort(decode_order[shown])
        if frames.size == 0:
            return None
        # Shown before everything decoded ahead of it: nothing at or after it comes from earlier packets.
        earlier_max = np.maximum.accumulate(np.concatenate(([np.iinfo(np.int64).min], decode_order[:-1])))
        starts = np.flatnonzero(np.asarray(random_access, dtype=bool) & shown & (decode_order > earlier_max))
        dts = np.array([NO_DTS if packet_dts[i] is None else packet_dts[i] for i in starts], dtype=np.int64)
        # Decoding order and presentation order agree on random access points, so both stay ascending.
        return cls(
            pts=frames, seek_points=np.searchsorted(frames, decode_order[starts]), seek_dts=dts, packet_pts=decode_order
        )

    @property
    def num_frames(self) -> int:
        return int(self.pts.size)

    def frame_of(self, pts: int | None) -> int | None:
        """The index of the presented frame with this timestamp, or None."""
        if pts is None:
            return None
        index = int(np.searchsorted(self.pts, pts))
        return index if index < self.pts.size and self.pts[index] == pts else None

    def decode_position(self, pts: int | None) -> int | None:
        """Where the packet with this timestamp lies in decoding order, or None."""
        if pts is None:
            return None
        positions = np.flatnonzero(self.packet_pts == pts)
        return int(positions[0]) if positions.size else None

    def seek_dts_of(self, frame: int) -> int | None:
        """The decoding timestamp of seek point ``frame``'s packet, or None when unknown."""
        slot = int(np.searchsorted(self.seek_points, frame))
        dts = int(self.seek_dts[slot])
        return None if dts == NO_DTS else dts

    def seek_point_before(self, frame: int) -> int | None:
        """The last seek point strictly before ``frame`` (its reference lies at or after it), or None."""
        slot = int(np.searchsorted(self.seek_points, frame)) - 1
        return int(self.seek_points[slot]) if slot >= 0 else None

    def runs(self, wanted: list[int], min_skipped: int, reach: int = 1) -> list[tuple[int, list[int]]]:
        """``(start, frames)`` per continuous decode, for ascending ``wanted`` frames that each need the ``reach``
        frames before them: start 0 decodes from the first frame, any other start is a seek point. A run jumps
        to a later seek point only when that skips at least ``min_skipped`` frames that the current run would
        otherwise decode."""
        runs: list[tuple[int, list[int]]] = []
        decoded_to = -1  # the last frame the current run decodes
        for frame in wanted:
            start = self.seek_point_before(frame - reach + 1)
            if start is None or start - (decoded_to + 1) < min_skipped:
                if not runs:
                    runs.append((0, []))
                runs[-1][1].append(frame)
            else:
                runs.append((start, [frame]))
            decoded_to = frame
        return runs


def may_seek(wanted: list[int], min_skipped: int, reach: int = 1) -> bool:
    """Whether :meth:`FrameIndex.runs` could seek for ascending ``wanted`` frames, whatever the seek points:
    a run jumps to a seek point ``reach`` or more frames before a frame and at least ``min_skipped`` frames past
    the one decoded last, so some frame must lie ``min_skipped + reach + 1`` or more past the previous one (or
    past -1)."""
    gap = min_skipped + reach + 1
    return any(frame - before >= gap for before, frame in zip([-1, *wanted], wanted, strict=False))
