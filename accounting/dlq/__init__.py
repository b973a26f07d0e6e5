"""Dead letters: what a parked message is and why (``letters``, pure), listing, replaying and
purging ``billing.dead-letters`` on the broker (``queue``), and the commands' own settings
(``settings``: the replay limit and the sender's URL a replay publishes through).

May import ``store``, ``infra`` and ``core``; never ``service`` or anything above it.
"""
