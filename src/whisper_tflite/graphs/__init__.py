"""TF modules for each stage of the pipeline, written for TFLite: static shapes, builtin ops, no -inf."""
