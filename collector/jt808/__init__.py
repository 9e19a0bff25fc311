"""The JT/T 808 access server: vehicle terminals over TCP (protocol, session, server, registry)."""
