"""The bottom layer: typed configuration (params.yaml), errors, atomic writes, picture helpers and the sample catalog."""
