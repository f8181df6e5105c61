"""Data on disk: the sample clips, video I/O, the HDF5 dataset, hand curation, review pages and expression coverage."""
