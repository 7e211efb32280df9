"""One suite per port (Store, Bus, BlobStore), each run on every backend through `pytest.param`:
a new backend is one more param whose fixture starts the real thing."""
