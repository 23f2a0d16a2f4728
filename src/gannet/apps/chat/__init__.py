"""`gannet chat`: two peers, one UDP port each, text messages and file transfers.

- `framing`: the (type, length, payload) message framing on the connection (pure)
- `transfer`: outgoing and incoming files (chunks, SHA-256, unique names)
- `session`: one chat session over a pair of asyncio streams, no terminal
- `rendezvous`: listen and connect on the same endpoint until one connection results
- `ui`: the line-oriented terminal front end
"""
