"""Everything a user reads, checked against the log: the boards (``board_oracle.py``) and the
dashboard's summary, products, funnel and sparklines (``overview_oracle.py``, built on the boards' model).

The one entry the demo's self-check and the exactness tests call, so no answer a user can read is left
out of ``boards_match``.
"""

from __future__ import annotations

from typing import Any

from streamproc.verify.board_oracle import BoardCheck, Truth
from streamproc.verify.board_oracle import check_store as check_boards
from streamproc.verify.overview_oracle import check_point


def check_store(sink: Any, truth: Truth, **options: Any) -> BoardCheck:
    """``board_oracle.check_store`` with the dashboard's answers checked at every as_of point too."""
    return check_boards(sink, truth, extra=(check_point,), **options)
