"""Gannet's security layer, sans-I/O: the Noise key exchange carried in the
handshake (handshake, noise), per-datagram protection with replay window and
key update (protection), who the peer is (identity, known_hosts, code, psk).
docs/security.md has the threat model and the reasoning."""
