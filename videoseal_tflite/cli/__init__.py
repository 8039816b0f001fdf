"""The `videoseal-tflite` command: one module per verb; each parses its options and calls the layers below."""
