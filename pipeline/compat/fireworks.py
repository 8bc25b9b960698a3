"""FireWorks: the rocket's ping interval (verified on FireWorks 2.1.4).

A rocket pings its launch every ``PING_TIME_SECS`` (3600 s), a value ``fireworks.core.rocket``
copies from ``fw_config`` at import. A worker that calls runs lost after ``lost_after`` seconds
must ping more often than that, and FireWorks reads its setting only once, at import (from
``FW_config.yaml``), so :func:`set_ping_interval` sets the rocket module's copy.
"""

from __future__ import annotations

from evaluation.compat import VerifiedRange
from pipeline.compat import require

VERIFIED = VerifiedRange("FireWorks", "2.1.4", "2.1.4")


def set_ping_interval(seconds: int) -> None:
    """Make running rockets in this process ping their launch every ``seconds``.

    Raises
    ------
    pipeline.compat.UnverifiedLibrary
        FireWorks is outside the verified range.
    """
    require(VERIFIED, "setting the rocket's ping interval")
    import fireworks.core.rocket as rocket_module

    # stock FireWorks reads PING_TIME_SECS once, at import; the rocket reads this copy
    rocket_module.PING_TIME_SECS = seconds
