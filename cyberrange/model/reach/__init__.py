"""Static reachability: would a NEW connection from a node to an address get through?

The packet follows the routes (``routing.router_path``). Every firewall it is *forwarded* by
evaluates its rules in order on (source ip, destination ip, proto, destination port); the first
rule that matches decides; when none matches, the firewall's ``default`` decides. A router
(kind ``router``) has no rules and forwards everything.

This is the same decision the twin's nftables make, because the twin generates each firewall's
``forward`` chain as::

    ct state established,related accept     # replies and related ICMP of allowed flows
    <the rules, in file order>               # allow -> accept, deny -> drop
    policy <default>                         # allow -> accept, deny -> drop

so a NEW flow meets exactly the rules below in the same order, and its replies pass the firewalls
that saw its first packet, because their conntrack knows the flow. Replies are also routed: where
routes are asymmetric (a hand route sends them back another way), a firewall on the way back that
did not see the request meets the reply as an unknown packet, and only a rule that allows it (with
no destination port, since the reply goes to the client's ephemeral port) lets it through. So a
connection gets through only when the request is allowed forward AND the reply is not dropped on
its way back (``walk._reply_check``). Traffic addressed *to* a router or firewall itself goes
through the ``input`` chain, which the forward rules do not govern; here it is reported as
reachable once it gets to that router, and the twin must keep the input policy at accept to
match.

The package holds three views of that one decision:

- ``walk.py``: one flow, by walking routes and rules (``allowed``, ``decide``, ``matrix``);
- ``index.py``: whole topologies, by address classes with cached verdicts (``ReachIndex``),
  equal to ``allowed`` for every member of a class;
- ``table.py``: the reachability matrix of zones against services (``reach_matrix``).
"""
from cyberrange.model.reach.index import ReachIndex
from cyberrange.model.reach.table import MatrixColumn, MatrixRow, ReachMatrix, reach_matrix
from cyberrange.model.reach.walk import (
    ReachResult,
    allowed,
    decide,
    matrix,
    resolve_address,
    source_address,
)

__all__ = ["ReachIndex", "ReachMatrix", "MatrixRow", "MatrixColumn", "reach_matrix",
           "ReachResult", "allowed", "decide", "matrix", "resolve_address", "source_address"]
