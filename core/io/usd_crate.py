# SPDX-License-Identifier: GPL-3.0-or-later
"""A cheap sanity check of a binary USD (crate, .usdc) file's table of contents before OpenUSD
opens it. OpenUSD's crate reader sizes its tables from counts stored in the file before it reads
them: a 1.5 KB file with a corrupt count made it allocate (and touch) 16 GiB and run for a minute
(found by fuzzing). Here every section must lie inside the file and every table count must be
one that the section's bytes could honestly hold (compressed integers: at most 4 per byte before
LZ4, whose expansion is at most 255x). Struct only: no pxr needed to refuse a lying file."""
from __future__ import annotations

import os
import struct

MAGIC = b"PXR-USDC"
BOOTSTRAP = 88  # ident 8, version 8, TOC offset 8, reserved 64
SECTION = struct.Struct("<16sqq")  # name, start, size
LZ4_MAX_RATIO = 255
INTS_PER_BYTE = 4 * LZ4_MAX_RATIO  # 2-bit integer codes, then LZ4
# How many uint64 counts each section starts with (crate 0.4.0 and later; older files have fewer,
# and reading one more count than they hold only makes the check stricter where it cannot be).
COUNTS = {b"TOKENS": 3, b"STRINGS": 1, b"FIELDS": 1, b"FIELDSETS": 1, b"PATHS": 2, b"SPECS": 1}


def crate_file_problem(path) -> str | None:
    """crate_problem on a file, reading only the parts it checks (never the whole file)."""
    with open(path, "rb") as f:
        def read(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        return crate_problem(read, os.fstat(f.fileno()).st_size)


def crate_problem(read, length: int) -> str | None:
    """Why this crate file (`read(offset, n)` gives its bytes, `length` its size) cannot be what it
    claims, or None (also for anything not a crate file: text .usda is OpenUSD's to parse)."""
    head = read(0, BOOTSTRAP)
    if not head.startswith(MAGIC):
        return None
    if len(head) < BOOTSTRAP:
        return "truncated crate header"
    version = tuple(head[8:11])
    (toc,) = struct.unpack_from("<q", head, 16)
    if not BOOTSTRAP <= toc <= length - 8:
        return f"table of contents at {toc} lies outside the file"
    (count,) = struct.unpack("<Q", read(toc, 8))
    if count > (length - toc - 8) // SECTION.size:
        return f"{count} sections do not fit in the file"
    table = read(toc + 8, count * SECTION.size)
    for i in range(count):
        raw, start, size = SECTION.unpack_from(table, i * SECTION.size)
        name = raw.split(b"\0", 1)[0]
        if start < 0 or size < 0 or start + size > length:
            return f"section {name.decode('latin-1')!r} lies outside the file"
        problem = _counts_problem(read, name, start, size, version)
        if problem:
            return f"section {name.decode('latin-1')}: {problem}"
    return None


def _counts_problem(read, name: bytes, start: int, size: int, version: tuple) -> str | None:
    wanted = COUNTS.get(name, 0) if version >= (0, 4, 0) else min(COUNTS.get(name, 0), 1)
    if not wanted:
        return None
    if size < 8 * wanted:
        return "too short for its counts"
    counts = struct.unpack(f"<{wanted}Q", read(start, 8 * wanted))
    if name == b"STRINGS":  # plain 32-bit token indexes
        return None if counts[0] * 4 <= size - 8 else f"{counts[0]} strings in {size} bytes"
    if name == b"TOKENS" and wanted == 3:  # count, text size, compressed size
        tokens, text, packed = counts
        if packed > size - 24 or text > LZ4_MAX_RATIO * packed or tokens > text:
            return f"{tokens} tokens, {text} bytes of text from {packed} compressed bytes in {size}"
        return None
    limit = INTS_PER_BYTE * size
    return None if all(c <= limit for c in counts) else f"count {max(counts)} is more than {size} bytes can hold"
