"""simulators package of sensing-edge."""
