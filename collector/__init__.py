"""collector package of sensing-edge."""
