"""The .rtxir container: header, section table, alignment and size limits (see FORMAT.md).

Pure byte layout: packing the header for the writer, and checking an untrusted buffer's
header and table for the reader. Section contents are the writer's and reader's business.
"""
from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import FormatError

# "\x89" catches 7-bit channels; "\r\n" catches text-mode line-ending conversion either way.
MAGIC = b"\x89RTXIR\r\n"
MAJOR = 1
MINOR = 2  # the newest minor version this rtxrt reads and writes

# magic, major, minor, section count, file size, reserved, SHA-256 of bytes [0, 32) + table.
HEADER = struct.Struct("<8sHHIQ8s32s")
# kind (4 ASCII chars), reserved, offset, length, SHA-256 of the section's bytes.
ENTRY = struct.Struct("<4sIQQ32s")
CHECKED_HEADER_BYTES = 32  # the part of the header that its checksum covers

ALIGN = 64  # section starts and tensor offsets (cache-line and SIMD friendly, mmap-able)
MAX_SECTIONS = 64
MAX_JSON_BYTES = 512 << 20
MAX_GRAPH_DEPTH = 64  # subgraph nesting
MAX_RANK = 64  # numpy's own limit on array dimensions

META = "META"
GRAPH = "GRPH"
WEIGHTS = "WGTS"
CUBINS = "CUBN"  # since 1.2: kernels compiled ahead of time (rtxrt aot --precompile)
# How messages name the sections; unknown kinds are shown as their 4-character code.
SECTION_NAMES = {META: "META", GRAPH: "GRAPH", WEIGHTS: "WEIGHTS", CUBINS: "CUBINS"}
# A file is stamped with the lowest minor version that has every section it holds, so a file
# without the sections later minors added is byte-identical to what a 1.1 writer made.
BASE_MINOR = 1
SECTION_MINOR = {CUBINS: 2}
# NVRTC's name of a GPU architecture, as CUBINS keys its cubins: sm_86, sm_120, sm_90a.
ARCH = re.compile(r"sm_[0-9]{2,3}[af]?")

# CUBINS starts with the byte length of its JSON index; the cubins follow it, ALIGN-aligned.
CUBINS_INDEX_LENGTH = struct.Struct("<Q")

assert HEADER.size == 64 and ENTRY.size == 56


@dataclass(frozen=True)
class Section:
    kind: str
    offset: int  # from the start of the file
    length: int
    sha256: bytes

    @property
    def name(self) -> str:
        return SECTION_NAMES.get(self.kind, self.kind)

    @property
    def end(self) -> int:
        return self.offset + self.length


def ir_hash_of(major: int, graph_sha256: bytes | None, weights_sha256: bytes | None) -> str:
    """The IR hash of a file of this major version with these GRAPH and WEIGHTS checksums
    (None: the section is absent, as good as empty)."""
    digest = hashlib.sha256(b"rtxir-ir-hash\0" + major.to_bytes(2, "little"))
    for sha in (graph_sha256, weights_sha256):
        digest.update(sha if sha is not None else hashlib.sha256(b"").digest())
    return digest.hexdigest()


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def place(lengths: list[int]) -> tuple[list[int], int]:
    """Offsets of sections of these lengths laid out in order, each at the next multiple of
    ALIGN, and the resulting file size. The layout is canonical: readers reject any other placement."""
    pos = HEADER.size + ENTRY.size * len(lengths)
    offsets = []
    for length in lengths:
        pos = align(pos)
        offsets.append(pos)
        pos += length
    return offsets, pos


def version_for(kinds: Iterable[str]) -> tuple[int, int]:
    """The version a writer stamps on a file holding sections of these kinds."""
    return MAJOR, max([BASE_MINOR, *(SECTION_MINOR.get(kind, BASE_MINOR) for kind in kinds)])


def pack_header(sections: list[Section], file_size: int, version: tuple[int, int] = (MAJOR, MINOR)) -> bytes:
    """Header followed by the section table."""
    head = HEADER.pack(MAGIC, version[0], version[1], len(sections), file_size, bytes(8), bytes(32))
    table = b"".join(
        ENTRY.pack(s.kind.encode("ascii"), 0, s.offset, s.length, s.sha256) for s in sections
    )
    digest = hashlib.sha256(head[:CHECKED_HEADER_BYTES] + table).digest()
    return head[:CHECKED_HEADER_BYTES] + digest + table


def read_table(buf: memoryview, label: str) -> tuple[tuple[int, int], list[Section]]:
    """Check the header and section table of ``buf``; return the version and the sections.

    Checks run in an order that gives the most useful message: magic, version, sizes, the
    header checksum, then the placement of every section. Section checksums are left to the
    caller, which verifies each section before it parses it.
    """
    size = len(buf)

    def bad(message: str) -> FormatError:
        return FormatError(f"{label}: {message}")

    if size == 0:
        raise bad("empty file (not an rtxir file)")
    magic = bytes(buf[: len(MAGIC)])
    if magic != MAGIC:
        if size < len(MAGIC) and MAGIC.startswith(magic):
            raise bad(f"truncated: the file has only {size} bytes")
        if bytes(buf[:9]).startswith((MAGIC[:6] + b"\n", MAGIC[:6] + b"\r\r\n")):
            raise bad("not an rtxir file (bad magic: line endings were converted, "
                      "was the file copied in text mode?)")
        raise bad("not an rtxir file (bad magic)")
    if size < HEADER.size:
        raise bad(f"truncated: the file has {size} bytes, less than the {HEADER.size}-byte header")
    _, major, minor, count, file_size, _, digest = HEADER.unpack_from(buf, 0)
    if major > MAJOR:
        raise bad(f"format version {major}.{minor} is newer than this rtxrt supports "
                  f"({MAJOR}.x); upgrade rtxrt")
    if major < MAJOR:
        raise bad(f"format version {major}.{minor} is older than this rtxrt supports "
                  f"({MAJOR}.x); re-run `rtxrt aot` to rebuild it")
    if count > MAX_SECTIONS:
        raise bad(f"section table has {count} entries (at most {MAX_SECTIONS} allowed; "
                  "the file is damaged)")
    table_end = HEADER.size + ENTRY.size * count
    if table_end > size:
        raise bad(f"truncated: the section table ends at byte {table_end} but the file has {size} bytes")
    table = buf[HEADER.size:table_end]
    if hashlib.sha256(bytes(buf[:CHECKED_HEADER_BYTES]) + bytes(table)).digest() != digest:
        raise bad("checksum mismatch in the header or section table (the file is damaged)")

    sections: list[Section] = []
    for i in range(count):
        raw_kind, _, offset, length, sha = ENTRY.unpack_from(table, i * ENTRY.size)
        if not (raw_kind.isascii() and raw_kind.isalnum()):
            raise bad(f"section {i} has an invalid kind {raw_kind!r}")
        section = Section(raw_kind.decode("ascii"), offset, length, sha)
        if any(s.kind == section.kind for s in sections):
            raise bad(f"section {section.name} appears twice")
        sections.append(section)

    offsets, expected_size = place([s.length for s in sections])
    for section, expected in zip(sections, offsets):
        if section.offset != expected:
            raise bad(f"section {section.name} starts at byte {section.offset}, expected {expected} "
                      "(the file is damaged)")
        if section.end > size:
            raise bad(f"truncated: section {section.name} ends at byte {section.end} "
                      f"but the file has {size} bytes")
    if file_size != expected_size:
        raise bad(f"header says the file has {file_size} bytes but its sections end at byte "
                  f"{expected_size} (the file is damaged)")
    # Every section ends within the file (checked above), so it cannot be shorter than file_size.
    if size > file_size:
        raise bad(f"the file has {size} bytes but should have {file_size} (trailing data)")
    # Padding is not covered by any checksum, so insist it is zero: then every byte is checked.
    gap_start = table_end
    for section in sections:
        if any(buf[gap_start:section.offset]):
            raise bad(f"non-zero padding before section {section.name} (the file is damaged)")
        gap_start = section.end
    return (major, minor), sections
