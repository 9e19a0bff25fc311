"""Suite-wide settings. Each area keeps its own fixtures in tests/<area>/conftest.py;
reusable real-component fixtures (InfluxDB, Mosquitto) live in tests/support/."""

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci")
