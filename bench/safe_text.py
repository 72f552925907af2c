"""File names that are not valid UTF-8, kept as data.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 as lone surrogates
(``surrogateescape``, ``os.fsdecode``), which open the file again but cannot be written to parquet,
hashed as UTF-8 or printed. The harness keeps the path itself (a ``Path``, and in JSON the escaped
surrogates, so ``os.fsencode(json.loads(text))`` gives the original bytes back) and uses
:func:`printable` wherever a name becomes text: sample ids, store columns, messages.
"""

from __future__ import annotations

import os


def printable(text: str) -> str:
    """``text`` as valid UTF-8: an undecodable byte (surrogate escape) becomes ``\\xNN``, any other
    lone surrogate ``\\uDNNN``; valid text is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def path_text(path: str | os.PathLike[str]) -> str:
    """A path for messages and ids (see :func:`printable`)."""
    return printable(os.fspath(path))
