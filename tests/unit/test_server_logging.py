"""`voice-agent serve` at DEBUG shows the server's own lines, not aiortc's line per RTP packet."""

from __future__ import annotations

import logging

from voice_agent.server.runner import PER_PACKET_LOGGERS, quiet_per_packet_logs


def test_debug_keeps_the_servers_lines_and_drops_aiortcs_per_packet_ones() -> None:
    root = logging.getLogger()
    before = root.level, {n: logging.getLogger(n).level for n in PER_PACKET_LOGGERS}
    try:
        root.setLevel(logging.DEBUG)
        quiet_per_packet_logs()
        assert logging.getLogger("voice_agent.services.llm_llamacpp").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("aiortc.rtcpeerconnection").isEnabledFor(logging.DEBUG)
        for name in PER_PACKET_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)
            assert logging.getLogger(name).isEnabledFor(logging.INFO)
        root.setLevel(logging.WARNING)  # quieter than INFO stays quieter
        quiet_per_packet_logs()
        assert not logging.getLogger(PER_PACKET_LOGGERS[0]).isEnabledFor(logging.INFO)
    finally:
        root.setLevel(before[0])
        for name, level in before[1].items():
            logging.getLogger(name).setLevel(level)
