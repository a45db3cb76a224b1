"""Defender actions on a running twin (``cyberrange blue``; issue 14).

- ``actions``: the library API (``apply``, ``revert``, ``active``, ``history``,
  ``record_refusal``) the CLI and the automated response call;
- ``target``: the live twin an action acts on (namespaces, model, switch ports);
- ``plans``, ``processes``: each action checked against the model and planned before the
  kernel changes; ``nft``: where its nftables objects go; ``rules``: rules in the
  topology's syntax; ``log``: the action log ``actions.jsonl`` of the run folder.

See docs/blue-team.md.
"""
