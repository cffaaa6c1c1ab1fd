"""Bounded decompression of Kafka record batches (``runtime/batch_codecs.py``) and the fetcher's refusal of
a batch past the bound (``faust_compat.bound_batches``), against aiokafka's own codecs and record batches.

Every codec decodes exactly what aiokafka's decoder does, in every framing Kafka clients write (xerial
snappy blocks, several gzip members, several lz4 or zstd frames); a payload past the bound raises
``BatchTooLarge``; and a batch of several records past it reaches the consumer as one record at the
batch's last offset, while a batch within it reads exactly as without the bound.
"""

from __future__ import annotations

import gzip
import time

import orjson
import pytest
from aiokafka import codec
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from streamproc.ingest.events import RefusedBatch, decode
from streamproc.runtime import faust_compat
from streamproc.runtime.batch_codecs import BatchTooLarge, decoders

LIMIT = 1 << 20
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
EVENTS = b"".join(orjson.dumps({"type": "view", "streamer_id": f"s-{i % 97}", "viewer_id": f"v{i}", "seq": i})
                  for i in range(3_000))  # ~200 KB


@pytest.mark.parametrize("name", list(CODEC_IDS))
def test_each_codec_decodes_exactly_what_aiokafka_decodes(name: str) -> None:
    ours, theirs = decoders(LIMIT)[f"{name}_decode"], getattr(codec, f"{name}_decode")
    payloads = [getattr(codec, f"{name}_encode")(p) for p in (EVENTS, b"x")]
    if name == "snappy":  # aiokafka writes xerial blocks; a raw block is what other clients write
        payloads += [codec.snappy_encode(EVENTS, xerial_compatible=False),
                     codec.snappy_encode(EVENTS, xerial_compatible=True, xerial_blocksize=4096)]
    for payload in payloads:
        assert ours(payload) == theirs(payload)
    # nothing at all (aiokafka's snappy reads an xerial header with no block as a raw block, and fails)
    assert ours(getattr(codec, f"{name}_encode")(b"")) == b""


def test_frames_and_members_one_after_another_are_all_read() -> None:
    d = decoders(LIMIT)
    assert d["gzip_decode"](gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    assert d["lz4_decode"](codec.lz4_encode(b"ab") + codec.lz4_encode(b"cd")) == b"abcd"
    assert d["zstd_decode"](codec.zstd_encode(b"ab") + codec.zstd_encode(b"cd")) == b"abcd"


@pytest.mark.parametrize("name", list(CODEC_IDS))
def test_a_payload_past_the_bound_raises_and_one_at_it_does_not(name: str) -> None:
    encode, decode_ = getattr(codec, f"{name}_encode"), decoders(LIMIT)[f"{name}_decode"]
    assert decode_(encode(bytes(LIMIT))) == bytes(LIMIT)
    with pytest.raises(BatchTooLarge, match=rf"^{name} record batch of \d+ bytes decompresses past {LIMIT} bytes$"):
        decode_(encode(bytes(64 * LIMIT)))
    # several frames whose sum passes it
    if name != "snappy":
        with pytest.raises(BatchTooLarge):
            decode_(encode(bytes(LIMIT // 2 + 1)) + encode(bytes(LIMIT // 2 + 1)))


def test_a_truncated_payload_is_an_error_not_a_hang() -> None:
    d = decoders(LIMIT)
    for name in CODEC_IDS:
        whole = getattr(codec, f"{name}_encode")(EVENTS)
        with pytest.raises(Exception):
            d[f"{name}_decode"](whole[: len(whole) // 2])


def batch(codec_id: int, values: list[bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec_id, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=2**31 - 1)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_790_000_000_000 + i, key=b"s-bomb", value=value, headers=[])
    return bytes(builder.build())


def at(raw: bytes, base_offset: int) -> bytes:
    """A batch moved to ``base_offset`` (the first field; the CRC starts after it)."""
    return base_offset.to_bytes(8, "big") + raw[8:]


def consumed(raw: bytes) -> list:
    """What a consumer gets of ``raw`` (record batches of offsets 0..) through the fetcher's class."""
    records = fetcher.PartitionRecords(TopicPartition("live.views", 0), MemoryRecords(raw), [], 0, None, None,
                                       True, 0)
    return list(records)


@pytest.fixture
def bounded() -> None:
    original = fetcher.PartitionRecords
    modules = {m: {n: getattr(m, n) for n in faust_compat.CODEC_NAMES if hasattr(m, n)}
               for m in faust_compat.record_modules()}
    faust_compat.bound_batches(LIMIT)
    yield
    fetcher.PartitionRecords = original
    for module, names in modules.items():
        for name, fn in names.items():
            setattr(module, name, fn)


@pytest.mark.parametrize("name", list(CODEC_IDS))
def test_a_batch_past_the_bound_is_one_record_at_its_last_offset_and_the_next_batch_reads_on(
        bounded: None, name: str) -> None:
    bomb = batch(CODEC_IDS[name], [bytes(LIMIT)] * 3)  # three records, together past the bound
    got = consumed(bomb + at(batch(CODEC_IDS[name], [b'{"n": 1}', b'{"n": 2}']), 3))
    assert [(r.offset, r.key) for r in got] == [(2, None), (3, b"s-bomb"), (4, b"s-bomb")]
    assert [r.value for r in got[1:]] == [b'{"n": 1}', b'{"n": 2}']
    refused = got[0].value
    assert type(refused) is RefusedBatch and len(refused) == 0
    assert refused.detail.startswith(f"{name} record batch of ")
    assert refused.detail.endswith(f"past {LIMIT} bytes; offsets 0..2 (3 records) refused whole, unread")
    verdict = decode(refused, "live.views", None, None, max_bytes=65_536, max_future_ms=0)
    assert (verdict.reason, verdict.detail) == ("batch_too_large", refused.detail)


@pytest.mark.parametrize("magic", [0, 1])
def test_a_message_set_of_the_old_formats_past_the_bound_is_refused_too(bounded: None, magic: int) -> None:
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=CODEC_IDS["gzip"], batch_size=2**31 - 1)
    for i in range(3):
        builder.append(i, timestamp=1_790_000_000_000 if magic else None, key=b"s-bomb", value=bytes(LIMIT))
    (refused,) = consumed(at(bytes(builder.build()), 2))  # the broker gives a wrapper its last record's offset
    assert refused.offset == 2 and type(refused.value) is RefusedBatch
    assert abs(refused.timestamp - time.time() * 1000) < 60_000  # none in the batch: the refusal's, not -1
    assert refused.value.detail.endswith("offsets 2..2 (1 records) refused whole, unread")  # only the last is told


def test_a_batch_within_the_bound_reads_exactly_as_without_it(bounded: None) -> None:
    raw = batch(CODEC_IDS["zstd"], [EVENTS[i:i + 500] for i in range(0, 20_000, 500)]) + at(batch(0, [b"plain"]), 40)
    got = consumed(raw)
    fetcher.PartitionRecords = fetcher.PartitionRecords.__mro__[1]  # aiokafka's own
    want = consumed(raw)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in got] == [(r.offset, r.timestamp, r.key, r.value)
                                                                        for r in want]
    assert len(got) == 41


def test_redrive_reports_a_refused_batch_as_invalid_and_never_sends_it() -> None:
    from streamproc.ingest.deadletter import make_record
    from streamproc.logs.redrive import plan
    from streamproc.settings import Settings

    detail = "zstd record batch of 6422 bytes decompresses past 1048576 bytes; offsets 4..9 (6 records) ..."
    _, value = make_record("live.views", 3, 9, None, RefusedBatch(detail), 1_790_000_000_000,
                           decode(RefusedBatch(detail), "live.views", None, None, max_bytes=1, max_future_ms=0))
    rec = orjson.loads(value)
    assert (rec["reason"], rec["size"], rec["truncated"]) == ("batch_too_large", 0, False)
    for force in (False, True):
        p = plan([rec], Settings(), force=force)
        assert not p.ready and not p.refused and len(p.invalid) == 1, p
        assert "batch_too_large" in p.invalid[0] and "offsets 4..9" in p.invalid[0]
