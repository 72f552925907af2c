"""The evaluation path: protocol → runner → prediction store → scorer → results.

Modules, each importing only those listed before it (no circles, nothing imports the CLI):

- :mod:`~bench.evaluation.protocol_files`, :mod:`~bench.evaluation.protocol`: protocol YAML →
  validated :class:`~bench.evaluation.protocol.Protocol`; :mod:`~bench.evaluation.conditions`:
  its perturbation grid, instantiated.
- :mod:`~bench.evaluation.store`: the compact parquet prediction store (row content, encodings,
  streaming reads); :mod:`~bench.evaluation.run_record`: what a run's ranks record beside it.
- :mod:`~bench.evaluation.runner`: protocol × model → store (sharded, resumable; no scoring);
  :mod:`~bench.evaluation.predictions_import`: a predictions file → store.
- :mod:`~bench.evaluation.results`: the typed ``results.json`` schema;
  :mod:`~bench.evaluation.bootstrap`: seeded intervals over per-sample metric rows;
  :mod:`~bench.evaluation.metric_feed`: batches of store rows → metric states, one per group;
  :mod:`~bench.evaluation.scorer`: run directory → results, streamed shard by shard.

The CLI (:mod:`bench.cli.compose`) is the one place that composes run → score → tables.
"""
