"""analytics package of sensing-edge."""
