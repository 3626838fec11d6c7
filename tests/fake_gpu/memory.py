"""The fake device's memory: one host byte buffer whose real addresses are the device
pointers, carved into allocations with unallocated gaps between them.

Every access is checked as a GPU would fault on it, or as a plan would be wrong to depend on
it: it must lie wholly inside one allocation (an overrun lands in a gap), be naturally
aligned, and (``check_init``) read only bytes something wrote since the allocation was made.
A store where two lanes write different values to one element is a race (DeviceFault).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from .cuda_c import V16, DeviceFault, Memory

ALIGN = 256  # cudaMalloc's alignment
GAP = 256  # unallocated bytes after every allocation: an overrun faults


@dataclass(eq=False)
class Allocation:
    """One ``cupy.cuda.alloc``: ``ptr`` is a real address inside the device buffer."""

    index: int
    ptr: int
    size: int
    label: str = ""

    def __repr__(self) -> str:
        name = f" {self.label}" if self.label else ""
        return f"<allocation #{self.index}{name}: {self.size} bytes at 0x{self.ptr:x}>"


class FakeMemory(Memory):
    def __init__(self, size: int = 64 << 20, *, check_init: bool = True):
        size = -(-size // ALIGN) * ALIGN
        self._raw = np.zeros(size + 2 * ALIGN, np.uint8)
        start = (-self._raw.ctypes.data) % ALIGN
        self.buffer = self._raw[start:start + size]
        self.base = self.buffer.ctypes.data
        self.size = size
        self.written = np.zeros(size, bool)
        self.check_init = check_init
        self.allocations: list[Allocation] = []
        self._starts = np.zeros(0, np.int64)
        self._ends = np.zeros(0, np.int64)
        self._cursor = ALIGN  # offset 0 stays unallocated

    # ------------------------------------------------------------------ allocations

    def alloc(self, nbytes: int, label: str = "") -> Allocation:
        nbytes = int(nbytes)
        if nbytes < 0:
            raise DeviceFault(f"allocation of {nbytes} bytes")
        start = self._cursor
        end = start + max(nbytes, 1)
        if end + GAP > self.size:
            raise MemoryError(f"fake device memory exhausted: {nbytes} bytes wanted, "
                              f"{self.size - self._cursor} left of {self.size}")
        self._cursor = -(-(end + GAP) // ALIGN) * ALIGN
        allocation = Allocation(len(self.allocations), self.base + start, nbytes, label)
        self.allocations.append(allocation)
        self._starts = np.append(self._starts, start)
        self._ends = np.append(self._ends, start + nbytes)
        self.written[start:end] = False
        return allocation

    def find(self, address: int) -> tuple[Allocation | None, int]:
        """The allocation holding ``address`` and the offset in it (None, 0 if none does)."""
        offset = int(address) - self.base
        i = int(np.searchsorted(self._starts, offset, side="right")) - 1
        if i >= 0 and offset < self._ends[i]:
            return self.allocations[i], offset - int(self._starts[i])
        return None, 0

    def contains(self, address: int) -> bool:
        return 0 <= int(address) - self.base < self.size

    def describe(self, address: int) -> str:
        allocation, offset = self.find(address)
        if allocation is None:
            return f"0x{int(address):x} (in no allocation)"
        return f"{allocation!r} + {offset}"

    # ------------------------------------------------------------------ checks

    def _offsets(self, addr: np.ndarray, nbytes: int, what: str) -> np.ndarray:
        """Byte offsets into the buffer of elements of ``nbytes`` at ``addr``, checked."""
        offsets = np.asarray(addr, np.int64).reshape(-1) - self.base
        if offsets.size == 0:
            return offsets
        i = np.searchsorted(self._starts, offsets, side="right") - 1
        ok = i >= 0
        ends = np.where(ok, self._ends[np.maximum(i, 0)], -1)
        ok &= offsets + nbytes <= ends
        if not ok.all():
            bad = int(np.argmin(ok))
            raise DeviceFault(f"{what} of {nbytes} bytes out of bounds at {self.describe(self.base + offsets[bad])} "
                              f"({int((~ok).sum())} of {ok.size} elements outside every allocation)")
        alignment = min(nbytes, 16)
        if (offsets % alignment).any():
            bad = int(np.argmax(offsets % alignment != 0))
            raise DeviceFault(f"misaligned {what} of {nbytes} bytes at {self.describe(self.base + offsets[bad])}")
        return offsets

    def _check_written(self, offsets: np.ndarray, nbytes: int, what: str) -> None:
        if not self.check_init or offsets.size == 0:
            return
        if nbytes == 1:
            ok = self.written[offsets]
        else:
            ok = self.written[offsets[:, None] + np.arange(nbytes)].all(axis=1)
        if not ok.all():
            bad = int(np.argmin(ok))
            raise DeviceFault(f"{what} reads {int((~ok).sum())} of {ok.size} elements that nothing wrote, first at "
                              f"{self.describe(self.base + offsets[bad])}")

    # ------------------------------------------------------------------ kernels' loads and stores

    def load(self, addr: np.ndarray, dtype: np.dtype, mask: np.ndarray | None) -> np.ndarray:
        dtype = np.dtype(dtype)
        addr = np.asarray(addr)
        if mask is not None:
            addr = np.broadcast_to(addr, mask.shape)[mask]
        offsets = self._offsets(addr, dtype.itemsize, "load")
        self._check_written(offsets, dtype.itemsize, "a load")
        values = self.buffer.view(dtype)[offsets // dtype.itemsize]
        if mask is None:
            return values.reshape(addr.shape)
        out = np.zeros(mask.shape, dtype)
        out[mask] = values
        return out

    def store(self, addr: np.ndarray, dtype: np.dtype, values: np.ndarray, mask: np.ndarray | None) -> None:
        dtype = np.dtype(dtype)
        addr = np.asarray(addr).reshape(-1)
        values = np.asarray(values, dtype).reshape(-1)
        if values.size == 1 and addr.size != 1:
            values = np.broadcast_to(values, addr.shape)
        if mask is not None:
            mask = np.broadcast_to(mask, addr.shape)
            addr, values = addr[mask], values[mask]
        offsets = self._offsets(addr, dtype.itemsize, "store")
        if offsets.size > 1 and not (np.diff(offsets) > 0).all():
            self._check_race(offsets, values, dtype)
        self.buffer.view(dtype)[offsets // dtype.itemsize] = values
        k = dtype.itemsize
        self.written[(offsets[:, None] + np.arange(k)).reshape(-1)] = True

    # ------------------------------------------------------------------ affine blocks (cuBLAS operands)

    def _affine(self, address: int, dtype: np.dtype, shape: tuple[int, ...], strides: tuple[int, ...],
                what: str) -> tuple[int, tuple[int, ...]] | None:
        """(buffer offset, byte strides) of the elements ``address + sum(i_d * strides[d])`` (in
        elements) for every index of ``shape``, checked as ``load`` / ``store`` check each
        element; None for an empty block. Its extreme elements bound the rest, so it lies in
        one allocation when they do."""
        k = dtype.itemsize
        if any(n == 0 for n in shape):
            return None
        if any(st < 0 for st in strides):
            raise ValueError("affine blocks take non-negative strides")
        last = int(address) + k * sum((n - 1) * st for n, st in zip(shape, strides))
        self._offsets(np.array([int(address), last]), k, what)
        allocation, _ = self.find(address)
        if self.find(last)[0] is not allocation:
            raise DeviceFault(f"{what} of a block from {self.describe(address)} to {self.describe(last)} spans "
                              "several allocations")
        return int(address) - self.base, tuple(st * k for st in strides)

    def load_block(self, address: int, dtype: np.dtype, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
        """The elements at ``address + sum(i_d * strides[d])`` (strides in elements), as ``load``
        of that address array would give them, without building it."""
        dtype = np.dtype(dtype)
        place = self._affine(address, dtype, shape, strides, "load")
        if place is None:
            return np.zeros(shape, dtype)
        offset, byte_strides = place
        if self.check_init:
            for b in range(dtype.itemsize):
                flags = np.lib.stride_tricks.as_strided(self.written[offset + b:], shape, byte_strides)
                if not flags.all():
                    raise DeviceFault(f"a load reads {int((~flags).sum())} of {flags.size} elements that nothing "
                                      f"wrote in the block at {self.describe(self.base + offset)}")
        return np.lib.stride_tricks.as_strided(self.buffer[offset:].view(dtype), shape, byte_strides).copy()

    def store_block(self, address: int, dtype: np.dtype, values: np.ndarray, strides: tuple[int, ...]) -> None:
        """``values`` stored at ``address + sum(i_d * strides[d])`` (strides in elements); a block
        whose elements overlap goes through ``store`` (which checks for a race)."""
        dtype = np.dtype(dtype)
        shape = values.shape
        extents = sorted((st, n) for st, n in zip(strides, shape) if n > 1)
        span, disjoint = 1, True
        for st, n in extents:  # each stride steps past everything the inner ones cover
            disjoint &= st >= span
            span = st * (n - 1) + span
        if not disjoint:
            index = sum(np.arange(n).reshape((-1,) + (1,) * (len(shape) - d - 1)) * st
                        for d, (n, st) in enumerate(zip(shape, strides)))
            self.store(int(address) + np.asarray(index, np.int64) * dtype.itemsize, dtype, values, None)
            return
        place = self._affine(address, dtype, shape, strides, "store")
        if place is None:
            return
        offset, byte_strides = place
        target = np.lib.stride_tricks.as_strided(self.buffer[offset:].view(dtype), shape, byte_strides)
        target[...] = values
        for b in range(dtype.itemsize):
            np.lib.stride_tricks.as_strided(self.written[offset + b:], shape, byte_strides)[...] = True

    @staticmethod
    def _check_race(offsets: np.ndarray, values: np.ndarray, dtype: np.dtype) -> None:
        order = np.argsort(offsets, kind="stable")
        sorted_offsets = offsets[order]
        same = sorted_offsets[1:] == sorted_offsets[:-1]
        if not same.any():
            return
        raw = np.ascontiguousarray(values[order]).view(np.uint8).reshape(len(order), dtype.itemsize)
        differ = same & (raw[1:] != raw[:-1]).any(axis=1)
        if differ.any():
            raise DeviceFault(f"a race: {int(differ.sum())} pairs of lanes write different values to one "
                              f"{dtype} element (first at buffer offset {int(sorted_offsets[1:][differ][0])})")

    # ------------------------------------------------------------------ host side (memcpy)

    def check_range(self, address: int, nbytes: int, what: str, *, read: bool) -> Allocation:
        """A device range that must lie in one allocation (and be written, when read)."""
        allocation, offset = self.find(address)
        if allocation is None or offset + nbytes > allocation.size:
            raise DeviceFault(f"{what}: {nbytes} bytes at {self.describe(address)} overrun or miss every allocation")
        start = int(address) - self.base
        if read and self.check_init and not self.written[start:start + nbytes].all():
            bad = start + int(np.argmin(self.written[start:start + nbytes]))
            raise DeviceFault(f"{what}: copies bytes nothing wrote, first at {self.describe(self.base + bad)}")
        return allocation

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        """Bytes moved by address (device or host), marking device bytes written."""
        if nbytes:
            ctypes.memmove(int(dst), int(src), int(nbytes))
        if self.contains(dst):
            start = int(dst) - self.base
            self.written[start:start + nbytes] = True

    def read(self, address: int, nbytes: int) -> bytes:
        self.check_range(address, nbytes, "read", read=True)
        start = int(address) - self.base
        return self.buffer[start:start + nbytes].tobytes()


__all__ = ["ALIGN", "Allocation", "FakeMemory", "V16"]
