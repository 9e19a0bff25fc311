"""Modbus collection: device profiles, request planning, decoding, pollers (TCP, RTU, RTU over TCP)."""
