"""Dataset plugins. ``PLUGINS`` maps registry names to lazy ``module:attr`` targets."""

PLUGINS: dict[str, str] = {}
