"""Reading .tflite files: the interpreter wrapper, the metadata a file carries, static inspection, isolated load
checks, XNNPACK coverage, LiteRT's op profiler and the GPU/NPU checks. Needs only ai-edge-litert (and numpy)."""
