"""What a packet's own headers say about decoding it: may a decode start at this key frame, and may this
frame be left undecoded without changing any other.

Random access. A decode that starts at a random access point gives, from that frame on, exactly the frames
of a decode from the first frame.
A container's key-frame flag is not enough: H.264 muxers have flagged non-IDR I frames (mkvmerge did; NUT
keeps whatever flag it is given), and P frames after such an I frame may still predict from pictures before
it. A flagged key frame counts as a random access point only when its own bitstream says so:

- H.264: an IDR picture; or an I picture carrying a recovery-point SEI that names the picture itself
  (``recovery_frame_cnt`` 0) with ``exact_match_flag`` 1 and ``broken_link_flag`` 0, as x264 writes for its
  open-GOP key frames. Pictures at or after it in output order then decode exactly as from the start of the
  stream (H.264 D.2.8); the leading B frames shown before it may not, and are never used.
- HEVC: an IRAP picture (BLA, IDR or CRA, NAL types 16-21): the pictures that follow it in both decoding and
  output order decode correctly; only its leading (RASL) pictures may not.
- VP9: a shown key frame, which refreshes every reference slot.
- VP8: a shown key frame (it resets the last, golden and alt-ref references).
- AV1: a temporal unit that carries a sequence header and whose first frame is a shown ``KEY_FRAME`` (it
  refreshes every reference slot), as AV1 in ISOBMFF and Matroska requires of a sync sample. A key frame
  hidden and shown later (``show_existing_frame``) is not.
- MPEG-2 and MPEG-4 Part 2: a packet of I pictures (VOPs) only, MPEG-2's after a sequence header (which resets
  the quantiser matrices). B pictures reference only the two anchors around them in display order, so the
  pictures shown from the I picture on never reference one before it; the leading B pictures of an open GOP
  may, and are never used.

Any other codec, or a packet that cannot be parsed, is not a random access point here (the caller decodes
from an earlier one, or from the start).

Disposable frames. An H.264 picture whose slices are all B slices with ``nal_ref_idc`` 0 is never a reference:
no other picture's pixels or motion vectors depend on it, and it is not an I or P reference frame either, so leaving
it out of the decode changes nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

# Codecs whose key frames this module can check (FFmpeg codec names, not decoder names: AV1 decodes with libdav1d).
CHECKED_CODECS = frozenset({"h264", "hevc", "vp9", "vp8", "av1", "mpeg2video", "mpeg4"})

H264_IDR, H264_SEI, H264_SLICE = 5, 6, 1
H264_RECOVERY_POINT = 6  # SEI payload type
H264_B_SLICE, H264_I_SLICE = 1, 2  # slice_type % 5
HEVC_IRAP = range(16, 22)  # BLA_W_LP .. CRA_NUT
HEVC_VCL = range(32)
AV1_SEQUENCE_HEADER, AV1_FRAME_HEADER, AV1_FRAME = 1, 3, 6  # obu_type
MPEG2_SEQUENCE_HEADER, MPEG2_PICTURE, MPEG2_I_PICTURE = 0xB3, 0x00, 1  # start codes; picture_coding_type
MPEG4_VOP, MPEG4_I_VOP = 0xB6, 0  # start code; vop_coding_type


def nal_length_size(codec: str, extradata: bytes | None) -> int | None:
    """Bytes of the length prefix before each NAL unit (MP4/Matroska ``avcC``/``hvcC`` streams), or None
    for Annex B byte streams (MPEG-TS, raw ``.h264``), whose NAL units follow start codes."""
    if not extradata or extradata[0] != 1:
        return None
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) > 21:
        return (extradata[21] & 3) + 1
    return None


def is_random_access(codec: str, data: bytes, length_size: int | None) -> bool:
    """Whether a key-frame packet of ``codec`` may start a decode (see the module's rules)."""
    try:
        if codec == "h264":
            return _h264_random_access(list(nal_units(data, length_size)))
        if codec == "hevc":
            return _hevc_random_access(list(nal_units(data, length_size)))
        if codec == "vp9":
            return _vp9_shown_key_frame(data)
        if codec == "vp8":
            return _vp8_shown_key_frame(data)
        if codec == "av1":
            return _av1_random_access(data)
        if codec == "mpeg2video":
            return _mpeg2_random_access(list(nal_units(data, None)))
        if codec == "mpeg4":
            return _mpeg4_random_access(list(nal_units(data, None)))
    except (IndexError, ValueError):  # a packet too short for what its headers announce
        return False
    return False


def is_disposable(codec: str, data: bytes | memoryview, length_size: int | None) -> bool:
    """Whether a packet holds an H.264 non-reference B picture (see the module's rules); False when unsure."""
    if codec != "h264":
        return False
    try:
        slices = [unit for unit in nal_units(data, length_size) if unit[0] & 0x1F == H264_SLICE]
        return bool(slices) and all(
            unit[0] & 0x60 == 0 and _h264_slice_type(unit) % 5 == H264_B_SLICE for unit in slices
        )
    except (IndexError, ValueError):
        return False


def nal_units(data: bytes | memoryview, length_size: int | None) -> Iterator[bytes | memoryview]:
    """The NAL units of one packet, length-prefixed (``length_size`` bytes) or after Annex B start codes."""
    if length_size is not None:
        position = 0
        while position < len(data):
            size = int.from_bytes(data[position : position + length_size], "big")
            position += length_size
            if size == 0 or position + size > len(data):
                raise ValueError("a NAL unit runs past its packet")
            yield data[position : position + size]
            position += size
        return
    data = bytes(data)
    starts = []
    position = data.find(b"\x00\x00\x01")
    while position >= 0:
        starts.append(position + 3)
        position = data.find(b"\x00\x00\x01", position + 3)
    for start, end in zip(starts, [*starts[1:], len(data) + 3], strict=True):
        unit = data[start : end - 3].rstrip(b"\x00")  # the next start code's leading zero (4-byte codes)
        if unit:
            yield unit


def _h264_random_access(units: list[bytes]) -> bool:
    slices = [unit for unit in units if unit[0] & 0x1F in (H264_SLICE, H264_IDR)]
    if not slices:
        return False
    if all(unit[0] & 0x1F == H264_IDR for unit in slices):
        return True
    if not all(_h264_slice_type(unit) % 5 == H264_I_SLICE for unit in slices):
        return False
    return any(_h264_exact_recovery_here(unit) for unit in units if unit[0] & 0x1F == H264_SEI)


def _h264_slice_type(unit: bytes) -> int:
    bits = _Bits(_rbsp(bytes(unit[1:16])))  # first_mb_in_slice and slice_type: the first bytes
    bits.ue()  # first_mb_in_slice
    return bits.ue()


def _h264_exact_recovery_here(unit: bytes) -> bool:
    """Whether an SEI NAL unit holds a recovery point at its own picture with an exact match."""
    payload = _rbsp(bytes(unit[1:]))
    position = 0
    while position < len(payload) and payload[position] != 0x80:  # 0x80: the RBSP trailing bits
        kind = size = 0
        while payload[position] == 0xFF:
            kind, position = kind + 255, position + 1
        kind, position = kind + payload[position], position + 1
        while payload[position] == 0xFF:
            size, position = size + 255, position + 1
        size, position = size + payload[position], position + 1
        if kind == H264_RECOVERY_POINT:
            bits = _Bits(payload[position : position + size])
            recovery_frame_cnt = bits.ue()
            exact_match, broken_link = bits.bit(), bits.bit()
            return recovery_frame_cnt == 0 and exact_match == 1 and broken_link == 0
        position += size
    return False


def _hevc_random_access(units: list[bytes]) -> bool:
    # The first VCL unit of the base layer (nuh_layer_id 0) gives the picture's type.
    for unit in units:
        kind, layer = (unit[0] >> 1) & 0x3F, ((unit[0] & 1) << 5) | (unit[1] >> 3)
        if kind in HEVC_VCL and layer == 0:
            return kind in HEVC_IRAP
    return False


def _vp9_shown_key_frame(data: bytes) -> bool:
    bits = _Bits(data)
    if bits.bits(2) != 2:  # frame_marker
        return False
    low, high = bits.bit(), bits.bit()
    if (high << 1 | low) == 3:
        bits.bit()  # reserved_zero
    if bits.bit():  # show_existing_frame: a repeat of an earlier frame
        return False
    frame_type, show_frame = bits.bit(), bits.bit()
    return frame_type == 0 and show_frame == 1  # frame_type 0: KEY_FRAME


def _vp8_shown_key_frame(data: bytes) -> bool:
    # The 3-byte frame tag (little-endian): bit 0 frame type (0: key frame), bit 4 show_frame; a key frame's
    # start code follows.
    return data[0] & 0x01 == 0 and data[0] & 0x10 != 0 and data[3:6] == b"\x9d\x01\x2a"


def _av1_random_access(data: bytes) -> bool:
    """A temporal unit with a sequence header whose first frame header is a shown KEY_FRAME."""
    position, reduced_still_header = 0, None
    while position < len(data):
        header = data[position]
        kind, extended, sized = (header >> 3) & 0xF, header & 0x4, header & 0x2
        position += 2 if extended else 1
        size = len(data) - position
        if sized:
            size, position = _leb128(data, position)
        payload = data[position : position + size]
        position += size
        if kind == AV1_SEQUENCE_HEADER:
            reduced_still_header = (payload[0] >> 3) & 1  # after seq_profile (3 bits) and still_picture
        elif kind in (AV1_FRAME_HEADER, AV1_FRAME):
            if reduced_still_header is None:
                return False
            if reduced_still_header:
                return True  # a still picture: one shown key frame
            bits = _Bits(payload)
            show_existing_frame, frame_type, show_frame = bits.bit(), bits.bits(2), bits.bit()
            return show_existing_frame == 0 and frame_type == 0 and show_frame == 1  # 0: KEY_FRAME
    return False


def _leb128(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 56, 7):
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise ValueError("malformed leb128 size")


def _mpeg2_random_access(units: list[bytes]) -> bool:
    # picture_header: temporal_reference (10 bits), then picture_coding_type (3 bits).
    kinds = [unit[0] for unit in units]
    if MPEG2_PICTURE not in kinds or MPEG2_SEQUENCE_HEADER not in kinds[: kinds.index(MPEG2_PICTURE)]:
        return False
    return all((unit[2] >> 3) & 7 == MPEG2_I_PICTURE for unit in units if unit[0] == MPEG2_PICTURE)


def _mpeg4_random_access(units: list[bytes]) -> bool:
    vops = [unit for unit in units if unit[0] == MPEG4_VOP]
    return bool(vops) and all(unit[1] >> 6 == MPEG4_I_VOP for unit in vops)


def _rbsp(payload: bytes) -> bytes:
    """A NAL unit's payload without its emulation-prevention bytes (``00 00 03`` -> ``00 00``)."""
    return payload.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in payload else payload


class _Bits:
    """Big-endian bit reader with Exp-Golomb codes (H.264 7.2 ``u(n)``, ``ue(v)``)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def bit(self) -> int:
        byte = self.data[self.position >> 3]  # IndexError past the end
        value = (byte >> (7 - (self.position & 7))) & 1
        self.position += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("malformed Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


H264_SPS = 7
H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_reference_frames(extradata: bytes | None) -> int | None:
    """``max_num_ref_frames`` of the first sequence parameter set in an H.264 stream's extradata (``avcC`` or
    Annex B), or None when there is none or it cannot be read: how many pictures one frame's vectors may
    point into (FFmpeg's exported vectors do not say which)."""
    if not extradata:
        return None
    if extradata[0] == 1:  # avcC: 5 header bytes, the SPS count, then 16-bit lengths before each SPS
        if len(extradata) < 8 or not extradata[5] & 0x1F:
            return None
        units: list[bytes | memoryview] = [extradata[8 : 8 + int.from_bytes(extradata[6:8], "big")]]
    else:
        units = list(nal_units(extradata, None))
    for unit in units:
        if len(unit) > 4 and unit[0] & 0x1F == H264_SPS:
            try:
                return _max_num_ref_frames(_Bits(_rbsp(bytes(unit[1:]))))
            except (IndexError, ValueError):
                return None
    return None


def _max_num_ref_frames(sps: _Bits) -> int:
    """H.264 7.3.2.1.1, read up to ``max_num_ref_frames``."""
    profile = sps.bits(8)
    sps.bits(16)  # constraint flags, level_idc
    sps.ue()  # seq_parameter_set_id
    if profile in H264_HIGH_PROFILES:
        chroma_format = sps.ue()
        if chroma_format == 3:
            sps.bit()  # separate_colour_plane_flag
        sps.ue(), sps.ue()  # bit depths
        sps.bit()  # qpprime_y_zero_transform_bypass_flag
        if sps.bit():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format != 3 else 12):
                if sps.bit():
                    _skip_scaling_list(sps, 16 if index < 6 else 64)
    sps.ue()  # log2_max_frame_num_minus4
    order_type = sps.ue()
    if order_type == 0:
        sps.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif order_type == 1:
        sps.bit()
        sps.se(), sps.se()
        for _ in range(sps.ue()):
            sps.se()
    return sps.ue()


def _skip_scaling_list(sps: _Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + sps.se() + 256) % 256
        last = following or last
