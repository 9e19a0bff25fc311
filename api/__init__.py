"""api package of sensing-edge."""
