"""How much memory this machine has, for size checks made before allocating."""
from __future__ import annotations

import os


def physical_memory() -> int | None:
    """Bytes of physical memory; None where the OS does not say (no sysconf: Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def available_memory() -> int | None:
    """Bytes new arrays can take without swapping: Linux's MemAvailable (page cache counts as
    free: the kernel hands it back), else the free physical pages; None where the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
