"""multipart/form-data bodies (POST /v1/files) without python-multipart, which Starlette's
`request.form()` needs and this project does not install."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(r'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r'(?:^|;)\s*filename="([^"]*)"', re.IGNORECASE)


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """{field name: (filename or None, content)}, or None when the body is not multipart/form-data."""
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        return None
    delimiter = b"--" + match.group(1).encode("latin-1")
    parts = body.split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):  # preamble, parts..., "--" epilogue
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in parts[1:-1]:
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            return None
        disposition = next((line for line in head.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition:")), "")
        name = _NAME.search(disposition)
        if name:
            filename = _FILENAME.search(disposition)
            fields[name.group(1)] = (filename.group(1) if filename else None, content.removesuffix(b"\r\n"))
    return fields
