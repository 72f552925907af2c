"""Dataset plugins. ``PLUGINS`` maps registry names to lazy ``module:attr`` targets."""

PLUGINS: dict[str, str] = {
    "sid_set": "bench.datasets.sid_set:SidSetFolders",
    "sid_set_parquet": "bench.datasets.sid_set_parquet:SidSetParquet",
    "dmimage": "bench.datasets.dmimage:DMImage",
    "genimage": "bench.datasets.genimage:GenImage",
    "synthbuster": "bench.datasets.synthbuster:Synthbuster",
    "manifest": "bench.datasets.manifest:Manifest",
    "sid_mini": "bench.datasets.mini:SidMini",
    "dmimage_mini": "bench.datasets.mini:DMImageMini",
}
