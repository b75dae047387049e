"""File formats: HDF5 (``hdf5``) and Hugging Face Datasets (``hf``)."""
