"""Which director serves a deployment's frontend."""

from __future__ import annotations

from .cluster import link_holding


def frontend_director(deployment):
    """The director that serves the deployment's frontend: its own address (stages 1-3) or the VIP's holder
    (DirectorNotAsked when a director could not be asked: it might be the holder)."""
    for director in deployment.directors:
        if director.address == deployment.frontend_address:
            return director
    holders = [d for d in deployment.directors if link_holding(d, deployment.frontend_address)]
    if len(holders) != 1:
        raise LookupError(f"the frontend {deployment.frontend_label} ({deployment.frontend_address}) is held by "
                          f"{[d.name for d in holders]}, not by exactly one director")
    return holders[0]
