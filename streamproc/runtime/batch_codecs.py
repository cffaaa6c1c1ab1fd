"""Kafka record batches decompressed with a bound: a batch may not grow past ``limit`` bytes.

A producer compresses a whole record batch, and the broker checks only the compressed size against its
``max.message.bytes``. Zeros compress about 30,000 to 1 in zstd: a batch of 40 KB on the wire carried a
1.2 GB value, and the worker, which decompressed whatever it fetched, went from 366 MB to 2.8 GB resident
and kept 1.6 GB of it. In a container with a memory limit such a batch kills the worker, its successor
fetches the same batch, and the partition never moves again: a few kilobytes stop the pipeline.

Each decoder here reads at most ``limit + 1`` bytes of output, from a streaming decompressor, and raises
``BatchTooLarge`` past the bound before more is held; the worker then refuses the batch as a whole
(``runtime/faust_compat.py``, ``bound_batches``; a dead letter with reason ``batch_too_large``). Every
codec Kafka defines is covered (gzip, snappy in its raw and xerial framings, lz4 frames, zstd frames, any
number of frames or members one after another), so none is left to an unbounded decoder.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable

import cramjam
import lz4.frame
import zstandard

_CHUNK = 1 << 20  # output read per step of a streaming decoder
_XERIAL = b"\x82SNAPPY\x00"  # the magic of the xerial snappy framing (Java clients' SnappyOutputStream)


class BatchTooLarge(Exception):
    """A compressed record batch whose output passes the bound (the rest was not decompressed)."""

    def __init__(self, codec: str, limit: int, compressed_bytes: int) -> None:
        super().__init__(f"{codec} record batch of {compressed_bytes} bytes decompresses past {limit} bytes")
        self.codec = codec
        self.limit = limit
        self.compressed_bytes = compressed_bytes


Decode = Callable[[bytes], bytes]


def decoders(limit: int) -> dict[str, Decode]:
    """The bounded decoder of each codec, under the names aiokafka's record modules call."""

    def check(codec: str, produced: int, payload: bytes) -> None:
        if produced > limit:
            raise BatchTooLarge(codec, limit, len(payload))

    def gzip_decode(payload: bytes) -> bytes:
        out, produced, data = [], 0, bytes(payload)
        while data:  # one gzip member after another, as GzipFile reads them
            d = zlib.decompressobj(wbits=31)
            while True:
                out.append(d.decompress(data, limit + 1 - produced))
                produced += len(out[-1])
                check("gzip", produced, payload)
                data = d.unconsumed_tail
                if not data or d.eof:
                    break
            if not d.eof:
                raise zlib.error("truncated gzip member")
            data = d.unused_data
        return b"".join(out)

    def snappy_decode(payload: bytes) -> bytes:
        view = memoryview(payload)
        if bytes(view[:8]) == _XERIAL:
            blocks, cursor = [], 16
            while cursor < len(view):
                (size,) = struct.unpack_from("!i", view, cursor)
                blocks.append(view[cursor + 4:cursor + 4 + size])
                cursor += 4 + size
        else:
            blocks = [view]
        # a raw snappy block starts with its exact output length, which the decoder holds it to
        check("snappy", sum(_varint(b) for b in blocks), payload)
        return b"".join(bytes(cramjam.snappy.decompress_raw(b)) for b in blocks)

    def lz4_decode(payload: bytes) -> bytes:
        out, produced, data = [], 0, bytes(payload)
        while data:  # one frame after another
            d = lz4.frame.LZ4FrameDecompressor()
            while not d.eof:
                out.append(d.decompress(data, max_length=min(limit + 1 - produced, _CHUNK)))
                produced += len(out[-1])
                check("lz4", produced, payload)
                data = b""  # the decompressor keeps what it has not used yet
                if d.needs_input and not d.eof:
                    raise RuntimeError("truncated lz4 frame")
            data = d.unused_data
        return b"".join(out)

    # A zstd block yields at most 128 KiB from 4 bytes of input (an RLE block): fed at most ``zstd_step``
    # bytes at a time, no call yields more than the bound, and the total is checked after each.
    zstd_step = max(64, limit >> 16)

    def zstd_decode(payload: bytes) -> bytes:
        out, produced, data = [], 0, bytes(payload)
        while data:  # one frame after another
            d = zstandard.ZstdDecompressor().decompressobj()
            pos = 0
            while not d.eof:
                if pos >= len(data):
                    raise zstandard.ZstdError("truncated zstd frame")
                out.append(d.decompress(data[pos:pos + zstd_step]))
                pos += zstd_step
                produced += len(out[-1])
                check("zstd", produced, payload)
            data = d.unused_data + data[pos:]
        return b"".join(out)

    return {"gzip_decode": gzip_decode, "snappy_decode": snappy_decode, "lz4_decode": lz4_decode,
            "zstd_decode": zstd_decode}


def _varint(block: memoryview) -> int:
    """The output length a raw snappy block declares (a little-endian base-128 varint)."""
    value = shift = 0
    for byte in block[:5]:
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise ValueError("bad snappy block length")
