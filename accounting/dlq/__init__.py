"""Dead letters: what a parked message is and why (``letters``, pure) and listing, replaying
and purging ``billing.dead-letters`` on the broker (``queue``).

May import ``store``, ``infra`` and ``core``; never ``service`` or anything above it.
"""
