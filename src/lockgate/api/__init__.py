"""HTTP adapters only: parse a request into a Call, hand it to the pipeline, render."""
