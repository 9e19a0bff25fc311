"""setup_logging: one key=value handler of ours however often it is called, others left alone."""

from __future__ import annotations

import io
import logging

from edge.logs import EdgeLogHandler, setup_logging


def test_setup_logging_twice_replaces_its_own_handler_and_keeps_the_others():
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    foreign = logging.StreamHandler(io.StringIO())
    root.addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    try:
        setup_logging("info", first)
        setup_logging("info", second)
        ours = [h for h in root.handlers if isinstance(h, EdgeLogHandler)]
        assert len(ours) == 1 and foreign in root.handlers
        logging.getLogger("edge.test").info("meter down", extra={"device": "m12"})
        assert first.getvalue() == ""
        assert "msg=\"meter down\" device=m12" in second.getvalue()
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)
