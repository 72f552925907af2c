"""Robustness audits built on run directories (``sida-bench audit``) and the shortcut check of a
dataset's files (``sida-bench data audit``). See docs/audit.md."""
