"""Card + weights -> export wrappers -> FLOAT32 .tflite (litert-torch), with parity checked on LiteRT."""
