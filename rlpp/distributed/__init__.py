"""Ray wiring: plain classes become actors here, at wiring time, never inside the logic."""
