"""The artifact store: what a file is and where it lives, the manifest, atomic writes, the output lock, staleness
and the byte-identical merge of sharded runs. Needs nothing above `errors`."""
