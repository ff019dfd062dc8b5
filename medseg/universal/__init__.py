"""One network for many partially labelled datasets, asked for a structure by name (``medseg segment``)."""
