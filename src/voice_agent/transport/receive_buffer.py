"""How long aiortc holds the user's audio before the pipeline hears it.

aiortc's receiver keeps a jitter buffer that releases an audio frame only once 4 later frames have
arrived: 80 ms at 20 ms per Opus frame, on every word the user says. That buffer smooths playout
for a listener; the server does not play the user's audio, it only runs VAD and STT on it, so it
needs no smoothing, only the packets in order. With 1 frame the buffer still reorders packets
that arrive out of order, and the end of the user's speech reaches the VAD 60 ms sooner.

aiortc has no option for this: the receiver's buffer is replaced before any packet arrives
(``on("track")`` fires while the offer is applied, before DTLS is up). aiortc is pinned, and a
version without the attribute leaves its own buffer in place, with a log line.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack

log = logging.getLogger(__name__)

AIORTC_AUDIO_PREFETCH = 4
_ATTR = "_RTCRtpReceiver__jitter_buffer"  # RTCRtpReceiver.__jitter_buffer
_CAPACITY = 16  # aiortc's own capacity for audio (a power of two)


def _buffer(pc: RTCPeerConnection, track: MediaStreamTrack) -> tuple[object, JitterBuffer | None]:
    receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
    buf = getattr(receiver, _ATTR, None) if receiver is not None else None
    return receiver, buf if isinstance(buf, JitterBuffer) else None


def set_audio_receive_buffer(pc: RTCPeerConnection, track: MediaStreamTrack, frames: int) -> bool:
    """Make the receiver of ``track`` release audio after ``frames`` later frames arrived.

    Returns False (and changes nothing) when the receiver is not found or aiortc's layout differs.
    """
    if frames == AIORTC_AUDIO_PREFETCH:
        return True
    receiver, old = _buffer(pc, track)
    if old is None or old._origin is not None:  # absent, or packets already in it
        log.warning("cannot set the audio receive buffer to %d frames: aiortc's receiver "
                    "differs from the pinned version; keeping its own", frames)
        return False
    setattr(receiver, _ATTR, JitterBuffer(capacity=_CAPACITY, prefetch=frames))
    return True


def audio_receive_buffer_frames(pc: RTCPeerConnection, track: MediaStreamTrack) -> int | None:
    """The prefetch of the receiver's audio buffer (for stats and tests); None if unknown."""
    _receiver, buf = _buffer(pc, track)
    return int(buf._prefetch) if buf is not None else None
