"""An Alipay bill's GBK text to UTF-8 on its way out of the zip (DuckDB reads no GBK).

The entry is inflated here (zlib lets go of the GIL) into pieces of whole lines on disk, and
glibc's ``iconv`` transcodes each piece in a process of its own while the next is inflated:
both cores, a quarter of the CPU of Python's decoder, no text in Python's hands. Python's
decoder is the fallback where there is no iconv. A newline byte is never inside a GB18030
character (their later bytes are 0x30 and up), so a piece cut after one is text on its own.
"""

from __future__ import annotations

import codecs
import os
import shutil
import subprocess
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from paygrid.recon.bill_format import BillRefused

ICONV = shutil.which("iconv")  # glibc's, in Debian's essential libc-bin
PIECE_BYTES = 64 * 1024 * 1024  # glibc 2.36's iconv reads all its input before it writes
ICONV_PROCESSES = 2  # at once, beside the inflate
ICONV_TIMEOUT_S = 120  # for one piece: about a second of work
CHUNK_BYTES = 4 * 1024 * 1024
_ERROR_BYTES = 4096


@dataclass(frozen=True, slots=True)
class _Piece:
    proc: subprocess.Popen[bytes]
    source: Path
    target: Path


def transcode(src: IO[bytes], out: Path, entry: str, name: str, limit: int) -> None:
    """``src`` (GB18030) into ``out`` (UTF-8); BillRefused naming ``name`` when it is over
    ``limit`` bytes or not GBK text."""
    if ICONV is None:
        _decode_in_python(src, out, entry, name, limit)
    else:
        _decode_in_iconv(src, out, entry, name, limit)


def _chunks(src: IO[bytes], entry: str, name: str, limit: int) -> Iterator[bytes]:
    read = 0
    while chunk := src.read(CHUNK_BYTES):
        read += len(chunk)
        if read > limit:
            raise BillRefused(name, 0, "", f"{entry} is too large")
        yield chunk


def _decode_in_iconv(src: IO[bytes], out: Path, entry: str, name: str, limit: int) -> None:
    work = out.with_name(out.name + ".pieces")
    work.mkdir()
    running: deque[_Piece] = deque()
    try:
        with out.open("wb", buffering=0) as dst:
            for source in _pieces(src, work, entry, name, limit):
                running.append(_start(source))
                if len(running) >= ICONV_PROCESSES:
                    _append(dst, _finish(running.popleft(), entry, name))
            while running:
                _append(dst, _finish(running.popleft(), entry, name))
    finally:
        for left in running:
            left.proc.kill()
            left.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _pieces(src: IO[bytes], work: Path, entry: str, name: str, limit: int) -> Iterator[Path]:
    """The inflated entry as files of about PIECE_BYTES, each ending after a newline."""
    count, size = 0, 0
    path = work / "0.in"
    f = path.open("wb")
    try:
        for chunk in _chunks(src, entry, name, limit):
            cut = chunk.rfind(b"\n") + 1 if size + len(chunk) >= PIECE_BYTES else 0
            if cut == 0:  # not full yet, or a line longer than a chunk: keep writing
                f.write(chunk)
                size += len(chunk)
                continue
            f.write(memoryview(chunk)[:cut])
            f.close()
            yield path
            count += 1
            path = work / f"{count}.in"
            f = path.open("wb")
            f.write(memoryview(chunk)[cut:])
            size = len(chunk) - cut
        f.close()
        if size:
            yield path
    finally:
        f.close()


def _start(source: Path) -> _Piece:
    assert ICONV is not None
    target = source.with_suffix(".out")
    argv = [ICONV, "-f", "GB18030", "-t", "UTF-8", "-o", str(target), str(source)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return _Piece(proc, source, target)


def _finish(piece: _Piece, entry: str, name: str) -> Path:
    _, error = piece.proc.communicate(timeout=ICONV_TIMEOUT_S)
    if piece.proc.returncode != 0:
        detail = error[:_ERROR_BYTES].decode("utf-8", "replace").strip()
        raise BillRefused(name, 0, "", f"{entry} is not GBK text ({detail})")
    piece.source.unlink()
    return piece.target


def _append(dst: IO[bytes], target: Path) -> None:
    """The piece's UTF-8 onto the end of ``dst``, copied by the kernel."""
    with target.open("rb") as f:
        left = os.fstat(f.fileno()).st_size
        while left > 0:
            done = os.copy_file_range(f.fileno(), dst.fileno(), left)
            if done == 0:
                break
            left -= done
    target.unlink()


def _decode_in_python(src: IO[bytes], out: Path, entry: str, name: str, limit: int) -> None:
    decoder = codecs.getincrementaldecoder("gb18030")()
    try:
        with out.open("w", encoding="utf-8", newline="") as dst:
            for chunk in _chunks(src, entry, name, limit):
                dst.write(decoder.decode(chunk))
            dst.write(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        raise BillRefused(name, 0, "", f"{entry} is not GBK text") from None
