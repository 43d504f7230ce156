"""Read scalars back from TensorBoard event files (tensorboardX's record
format) without the tensorboard package: what a test needs to check that
the events hold what was logged."""

import struct
from pathlib import Path


def scalars(folder: Path) -> dict:
    """tag -> [(step, value)] over every event file under ``folder``."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict = {}
    for path in sorted(Path(folder).glob("events.out.tfevents*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            record = data[pos + 12: pos + 12 + length]
            pos += 12 + length + 4
            event = Event.FromString(record)
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, round(value.simple_value, 6)))
    return {tag: [(s, v) for s, v in values] for tag, values in out.items()}
