"""Image access: dxtbx imagesets and fast HDF5 paths, streamed chunk by chunk."""
