"""`make bench`: latency, size and memory records (JSON + Markdown) of every variant, video and validation at scale."""
