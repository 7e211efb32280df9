"""The domain: rules, wire and row Structs, and the tables they follow; no I/O.

Nothing here imports the store, the bus, the blob store, aiohttp or asyncio
(`tests/test_layers.py` checks it): the use cases load what a rule needs, call it, and write
what it decided. Each rule has table tests in `tests/unit/`.
"""
