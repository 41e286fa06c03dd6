"""The competition metric, submission files, and the tuned weighted blender."""
