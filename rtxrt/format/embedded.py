"""What ties a file's embedded kernels (CUBINS) to the graph they were compiled for.

A cubin is GPU machine code. The runtime runs one from a file only when the caller opted in,
and only when (1) the arch's *binding* holds: a digest over the file's IR hash, the arch and
every cubin's name (a hash of the kernel source it was compiled from) and bytes, so cubins
moved from another file, left over from another graph or altered after the build are refused;
and (2) each cubin is an ELF image for that arch. Like the section checksums, these checks stop
accidents, not an attacker, who can recompute them: they never make a stranger's file safe
to run with embedded kernels (see FORMAT.md, "CUBINS").
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

_ELF_MAGIC = b"\x7fELF"
_ELF64, _LITTLE_ENDIAN = 2, 1
_EM_CUDA = 190
_HEADER = struct.Struct("<4sBBBBB7xHHIQQQIHHHHHH")  # the 64-byte ELF64 header


def cubin_binding(ir_hash: str, arch: str, cubins: Mapping[str, bytes | memoryview]) -> str:
    """Hex digest binding one arch's cubins ({blob name: bytes}) to the graph of ``ir_hash``."""
    digest = hashlib.sha256(b"rtxir-cubins\0" + ir_hash.encode("ascii") + b"\0" + arch.encode("ascii") + b"\0")
    for name in sorted(cubins):
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(cubins[name]).digest())
    return digest.hexdigest()


def cubin_problem(cubin: bytes | memoryview, arch: str) -> str | None:
    """None when ``cubin`` is a 64-bit little-endian CUDA ELF image for ``arch`` ("sm_86"),
    else what it is instead."""
    if len(cubin) < _HEADER.size or bytes(cubin[:4]) != _ELF_MAGIC:
        return "not an ELF image"
    fields = _HEADER.unpack_from(cubin)
    elf_class, byte_order, abi_version, machine, flags = fields[1], fields[2], fields[5], fields[7], fields[12]
    if elf_class != _ELF64 or byte_order != _LITTLE_ENDIAN or machine != _EM_CUDA:
        return "not a CUDA ELF image (cubin)"
    # The target SM sits in the low byte of e_flags up to ELF ABI 7 and in the next byte from
    # ABI 8 (CUDA 12.8+ for new archs); later ABIs are not second-guessed.
    if abi_version <= 8:
        sm = flags & 0xFF if abi_version < 8 else (flags >> 8) & 0xFF
        if str(sm) != arch[3:].rstrip("af"):
            return f"compiled for sm_{sm}, not {arch}"
    return None
