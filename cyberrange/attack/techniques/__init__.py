"""Attack techniques: each module declares its techniques with ``spec.technique`` on the function
that runs them; ``cyberrange.attack.catalog`` finds every one (a new technique family is a new
module here, nothing to register). The functions run inside the actor's namespace
(``cyberrange.attack.agent``) and import scapy lazily, so importing a module is cheap. Modules
that declare nothing (``common``, ``layer2``, ``tcp``, ``fastsend``) are the machinery the
families share.
"""
