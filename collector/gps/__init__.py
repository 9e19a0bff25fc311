"""GPS ingest: payload codecs, validation, CRS conversion and the MQTT subscriber."""
