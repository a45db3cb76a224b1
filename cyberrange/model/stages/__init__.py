"""The stages of loading a topology, one module per concern (as netlab's ``augment/``).

Each stage is a function ``stage(ctx)`` of a :class:`~cyberrange.model.stages.base.Context`:
it reads ``ctx.doc`` (the YAML with the position of every key and value), fills in part of
``ctx.topo``, and raises the first problem it finds as a ``UserError`` that reads
``FILE:LINE:COL: what is wrong (did you mean X?)``. The order they run in is the list
``STAGES`` in ``model/loader.py``; defaults they fill in come from ``model/defaults.yaml``.
"""
