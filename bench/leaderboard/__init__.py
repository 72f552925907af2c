"""Leaderboard workflows built on results files: validated submissions, rankings with
bootstrap intervals and paired significance tests, and a static site (see docs/leaderboard.md).

Modules: ``schema`` (the versioned ``submission.yaml``), ``safety`` (bounded, confined file
access), ``validate`` (every problem of a submission at once), ``submit`` (scoring through the
predictions-import path), ``entries`` / ``ranking`` (boards, intervals, ties), ``site`` (HTML,
JSON, CSV, figures).
"""
