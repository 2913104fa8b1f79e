"""Static pages of the web UI (HTML, CSS, JS); shipped as package data, no Python logic."""
